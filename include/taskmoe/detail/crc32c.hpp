#pragma once
// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the .tmoe format.
// Two implementations: portable slice-by-8 tables, and the SSE4.2 `crc32` instruction, chosen at
// run time. The hardware function carries its own target attribute so that including this header
// never emits SSE4.2 code outside a guarded function (the library must run on any x86-64).

#include <array>    // std::array
#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint32_t, std::uint64_t
#include <cstdlib>  // std::getenv
#include <cstring>  // std::memcpy, std::strcmp

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define TASKMOE_DETAIL_CRC32C_HW 1
#include <nmmintrin.h>  // _mm_crc32_u8, _mm_crc32_u64 (only used under target("sse4.2"))
#else
#define TASKMOE_DETAIL_CRC32C_HW 0
#endif

namespace taskmoe {
namespace detail {

using crc32c_tables = std::array<std::array<std::uint32_t, 256>, 8>;

inline const crc32c_tables& crc32c_table() {
  static const crc32c_tables t = [] {
    crc32c_tables r{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? 0x82F63B78u : 0u);
      r[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i)
      for (std::size_t s = 1; s < 8; ++s) r[s][i] = (r[s - 1][i] >> 8) ^ r[0][r[s - 1][i] & 0xFFu];
    return r;
  }();
  return t;
}

// `state` is the raw register (already inverted); callers use crc32c()/crc32c_extend().
inline std::uint32_t crc32c_update_portable(std::uint32_t state, const unsigned char* p,
                                            std::size_t n) noexcept {
  const crc32c_tables& t = crc32c_table();
  while (n >= 8) {
    std::uint32_t lo = 0, hi = 0;
    std::memcpy(&lo, p, 4);  // little-endian only (checked in config.hpp)
    std::memcpy(&hi, p + 4, 4);
    lo ^= state;
    state = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
            t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) state = (state >> 8) ^ t[0][(state ^ *p++) & 0xFF];
  return state;
}

// a * b mod P for reflected polynomials (bit 31 is x^0): moves a CRC register past zero bytes,
// register * x^(8n) for n of them, which is how independent streams are joined.
constexpr std::uint32_t crc32c_multmodp(std::uint32_t a, std::uint32_t b) noexcept {
  std::uint32_t product = 0;
  for (std::uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if ((a & m) != 0) product ^= b;
    b = (b & 1u) != 0 ? (b >> 1) ^ 0x82F63B78u : b >> 1;
  }
  return product;
}

// x^(8n) mod P, by repeated squaring of x^8.
constexpr std::uint32_t crc32c_x8n(std::uint64_t n) noexcept {
  std::uint32_t result = 1u << 31, square = 1u << 23;  // x^0, x^8
  for (; n != 0; n >>= 1) {
    if ((n & 1u) != 0) result = crc32c_multmodp(square, result);
    square = crc32c_multmodp(square, square);
  }
  return result;
}

// The hardware path runs three streams over consecutive stripes of this many bytes: one crc32
// instruction issues per cycle but each takes three, so a single chain ran at a third of the
// unit's rate (a fifth of a model's load time was its checksum).
inline constexpr std::size_t crc32c_stripe = 16384;
inline constexpr std::uint32_t crc32c_stripe_shift = crc32c_x8n(crc32c_stripe);

#if TASKMOE_DETAIL_CRC32C_HW
__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_update_sse42(
    std::uint32_t state, const unsigned char* p, std::size_t n) noexcept {
#if defined(__x86_64__)
  while (n >= 3 * crc32c_stripe) {
    // Stream 0 continues `state`, streams 1 and 2 start from 0; by linearity the register after
    // all three stripes is ((s0 * x^8L) ^ s1) * x^8L ^ s2.
    std::uint64_t s0 = state, s1 = 0, s2 = 0;
    for (std::size_t i = 0; i < crc32c_stripe; i += 8) {
      std::uint64_t v0 = 0, v1 = 0, v2 = 0;
      std::memcpy(&v0, p + i, 8);
      std::memcpy(&v1, p + crc32c_stripe + i, 8);
      std::memcpy(&v2, p + 2 * crc32c_stripe + i, 8);
      s0 = _mm_crc32_u64(s0, v0);
      s1 = _mm_crc32_u64(s1, v1);
      s2 = _mm_crc32_u64(s2, v2);
    }
    state = crc32c_multmodp(crc32c_stripe_shift,
                            crc32c_multmodp(crc32c_stripe_shift, static_cast<std::uint32_t>(s0)) ^
                                static_cast<std::uint32_t>(s1)) ^
            static_cast<std::uint32_t>(s2);
    p += 3 * crc32c_stripe;
    n -= 3 * crc32c_stripe;
  }
  std::uint64_t s = state;
  while (n >= 8) {
    std::uint64_t v = 0;
    std::memcpy(&v, p, 8);
    s = _mm_crc32_u64(s, v);
    p += 8;
    n -= 8;
  }
  state = static_cast<std::uint32_t>(s);
#endif
  while (n-- > 0) state = _mm_crc32_u8(state, *p++);
  return state;
}

inline bool crc32c_has_sse42() noexcept {
  // TASKMOE_CRC32C=portable forces the table path, so both paths are testable on one machine.
  static const bool ok = [] {
    const char* env = std::getenv("TASKMOE_CRC32C");
    if (env != nullptr && std::strcmp(env, "portable") == 0) return false;
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return ok;
}
#else
inline bool crc32c_has_sse42() noexcept { return false; }
#endif

// Continue a CRC32C: crc32c_extend(crc32c(a), b) == crc32c(a + b).
inline std::uint32_t crc32c_extend(std::uint32_t crc, const void* data, std::size_t n) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  const std::uint32_t state = ~crc;
#if TASKMOE_DETAIL_CRC32C_HW
  if (crc32c_has_sse42()) return ~crc32c_update_sse42(state, p, n);
#endif
  return ~crc32c_update_portable(state, p, n);
}

// CRC32C of a byte range; crc32c("123456789") == 0xE3069283.
inline std::uint32_t crc32c(const void* data, std::size_t n) noexcept {
  return crc32c_extend(0, data, n);
}

}  // namespace detail
}  // namespace taskmoe
