#pragma once
// UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).

#include <cstddef>      // std::size_t
#include <string>       // std::string
#include <string_view>  // std::string_view

#include <taskmoe/error.hpp>

namespace taskmoe {
namespace tokenizer {

// Byte offset of the first invalid sequence, or npos when `s` is valid UTF-8.
inline std::size_t find_invalid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) { ++i; continue; }
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return i;
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t j = 2; j < len; ++j)
      if (p[i + j] < 0x80 || p[i + j] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

// Throws invalid_argument_error "invalid UTF-8 at byte N" naming `what`.
inline void check_utf8(std::string_view s, const std::string& what = "input") {
  const std::size_t bad = find_invalid_utf8(s);
  if (bad != std::string_view::npos)
    throw invalid_argument_error(what + ": invalid UTF-8 at byte " + std::to_string(bad));
}

// True when `s` holds only ASCII whitespace (or nothing).
inline bool is_blank(std::string_view s) noexcept {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v') return false;
  return true;
}

}  // namespace tokenizer
}  // namespace taskmoe
