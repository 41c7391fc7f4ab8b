#pragma once
// Element types of stored tensors. The numeric values are the on-disk codes of the .tmoe tensor
// table (docs/format.md), so never renumber them.

#include <cstddef>      // std::size_t
#include <cstdint>      // std::uint8_t
#include <optional>     // std::optional
#include <string_view>  // std::string_view

namespace taskmoe {

enum class dtype : std::uint8_t {
  f32 = 0,   // IEEE binary32
  f16 = 1,   // IEEE binary16
  bf16 = 2,  // bfloat16
  i8 = 3,    // signed 8-bit, symmetric, with one f32 scale per row (see tensor_view::scales)
  u8 = 4,    // raw bytes (the embedded SentencePiece model)
};

inline constexpr std::size_t dtype_count = 5;

inline constexpr std::size_t dtype_size(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return 4;
    case dtype::f16:
    case dtype::bf16: return 2;
    case dtype::i8:
    case dtype::u8: return 1;
  }
  return 0;
}

// Short lowercase names, as used in docs and messages.
inline constexpr std::string_view dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::f16: return "f16";
    case dtype::bf16: return "bf16";
    case dtype::i8: return "i8";
    case dtype::u8: return "u8";
  }
  return "unknown";
}

inline constexpr bool is_valid_dtype_code(std::uint8_t code) noexcept { return code < dtype_count; }

inline std::optional<dtype> dtype_from_name(std::string_view s) noexcept {
  for (std::uint8_t c = 0; c < dtype_count; ++c)
    if (dtype_name(static_cast<dtype>(c)) == s) return static_cast<dtype>(c);
  return std::nullopt;
}

// safetensors spells dtypes in upper case ("F16", "BF16", ...).
inline constexpr std::string_view safetensors_dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::i8: return "I8";
    case dtype::u8: return "U8";
  }
  return "unknown";
}

inline std::optional<dtype> dtype_from_safetensors_name(std::string_view s) noexcept {
  for (std::uint8_t c = 0; c < dtype_count; ++c)
    if (safetensors_dtype_name(static_cast<dtype>(c)) == s) return static_cast<dtype>(c);
  return std::nullopt;
}

}  // namespace taskmoe
