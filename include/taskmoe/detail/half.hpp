#pragma once
// IEEE half (f16) and bfloat16 <-> float conversion, scalar and bit-exact: float -> narrow rounds
// to nearest, ties to even; NaN stays NaN (quietened, sign and top payload kept), infinities and
// overflow go to infinity. Done in integer arithmetic so the result does not depend on the
// floating-point environment or on -ffast-math.

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint16_t, std::uint32_t
#include <cstring>  // std::memcpy

namespace taskmoe {
namespace detail {

inline std::uint32_t float_bits(float f) noexcept {
  std::uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_float(std::uint32_t u) noexcept {
  float f = 0;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  int exp = (h >> 10) & 0x1F;
  std::uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return bits_float(sign | 0x7F800000u | (mant << 13));  // inf / NaN
  if (exp == 0) {
    if (mant == 0) return bits_float(sign);  // signed zero
    // Subnormal: normalise the mantissa, since every f16 subnormal is a normal float.
    exp = 1;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    mant &= 0x3FFu;
  }
  return bits_float(sign | (static_cast<std::uint32_t>(exp + 112) << 23) | (mant << 13));
}

inline std::uint16_t f32_to_f16(float f) noexcept {
  const std::uint32_t x = float_bits(f);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u)  // NaN: keep it a (quiet) NaN even if the payload is in the low bits
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  if (a >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520 -> inf
  if (a >= 0x38800000u) {  // result is a normal f16 (|f| >= 2^-14)
    std::uint32_t h = (a - 0x38000000u) >> 13;  // re-bias exponent 127 -> 15, drop 13 bits
    const std::uint32_t rem = a & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
    return static_cast<std::uint16_t>(sign | h);
  }
  if (a <= 0x33000000u) return sign;  // <= 2^-25: rounds to (signed) zero, the tie included
  // Subnormal f16: value = m * 2^-24.
  const std::uint32_t e = a >> 23;
  const std::uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t shift = 126 - e;  // 14 .. 24
  std::uint32_t h = m >> shift;
  const std::uint32_t rem = m & ((1u << shift) - 1);
  const std::uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

inline float bf16_to_f32(std::uint16_t b) noexcept {
  return bits_float(static_cast<std::uint32_t>(b) << 16);
}

inline std::uint16_t f32_to_bf16(float f) noexcept {
  const std::uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u)  // NaN: truncating could make it inf; force quiet bit
    return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  const std::uint32_t rounding = 0x7FFFu + ((x >> 16) & 1u);  // ties to even
  return static_cast<std::uint16_t>((x + rounding) >> 16);
}

// Array forms, used by the readers to widen whole tensors.
inline void f16_to_f32(const std::uint16_t* in, float* out, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = f16_to_f32(in[i]);
}
inline void bf16_to_f32(const std::uint16_t* in, float* out, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}
inline void f32_to_f16(const float* in, std::uint16_t* out, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = f32_to_f16(in[i]);
}
inline void f32_to_bf16(const float* in, std::uint16_t* out, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}

}  // namespace detail
}  // namespace taskmoe
