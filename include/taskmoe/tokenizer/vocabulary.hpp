#pragma once
// Piece lookup straight from a serialized SentencePiece ModelProto, without libsentencepiece:
// the proto's field 1 is the repeated SentencePiece message whose field 1 is the piece string,
// and a piece's id is its position. Lets the token-level API find the target tag's id in builds
// without SentencePiece.

#include <cstdint>      // std::uint64_t
#include <string>       // std::string
#include <string_view>  // std::string_view

#include <taskmoe/error.hpp>

namespace taskmoe {
namespace tokenizer {

namespace detail {

inline bool read_varint(std::string_view s, std::size_t& i, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (i >= s.size()) return false;
    const auto b = static_cast<unsigned char>(s[i++]);
    v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// Skips a field of wire type `wt` at i; false on malformed input.
inline bool skip_field(std::string_view s, std::size_t& i, std::uint64_t wt) {
  std::uint64_t v = 0;
  switch (wt) {
    case 0: return read_varint(s, i, v);
    case 1: i += 8; return i <= s.size();
    case 2:
      if (!read_varint(s, i, v) || v > s.size() - i) return false;
      i += static_cast<std::size_t>(v);
      return true;
    case 5: i += 4; return i <= s.size();
    default: return false;
  }
}

}  // namespace detail

// Calls fn(id, piece) for each piece of the serialized model in id order until fn returns true.
// Throws format_error on a malformed proto.
template <class Fn>
void for_each_piece(std::string_view model, Fn&& fn) {
  std::size_t i = 0;
  int id = 0;
  const auto bad = [] { throw format_error("sentencepiece model", "malformed ModelProto"); };
  while (i < model.size()) {
    std::uint64_t key = 0, len = 0;
    if (!detail::read_varint(model, i, key)) bad();
    if (key != ((1u << 3) | 2u)) {
      if (!detail::skip_field(model, i, key & 7)) bad();
      continue;
    }
    if (!detail::read_varint(model, i, len) || len > model.size() - i) bad();
    const std::string_view msg = model.substr(i, static_cast<std::size_t>(len));
    i += static_cast<std::size_t>(len);
    std::size_t j = 0;
    std::string_view piece;
    while (j < msg.size()) {
      std::uint64_t k2 = 0, l2 = 0;
      if (!detail::read_varint(msg, j, k2)) bad();
      if (k2 == ((1u << 3) | 2u)) {
        if (!detail::read_varint(msg, j, l2) || l2 > msg.size() - j) bad();
        piece = msg.substr(j, static_cast<std::size_t>(l2));
        j += static_cast<std::size_t>(l2);
      } else if (!detail::skip_field(msg, j, k2 & 7)) {
        bad();
      }
    }
    if (fn(id, piece)) return;
    ++id;
  }
}

// Id of `piece` in the serialized model, or -1 if absent. Throws format_error on a malformed proto.
inline int find_piece_id(std::string_view model, const std::string& piece) {
  int found = -1;
  for_each_piece(model, [&](int id, std::string_view p) {
    if (p != piece) return false;
    found = id;
    return true;
  });
  return found;
}

}  // namespace tokenizer
}  // namespace taskmoe
