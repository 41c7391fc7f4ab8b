#include "test_helpers.hpp"

using namespace taskmoe::detail;

TEST_CASE("crc32c matches the standard check value") {
  CHECK(crc32c("123456789", 9) == 0xE3069283u);
  CHECK(crc32c("", 0) == 0u);
  // RFC 3720 B.4: 32 bytes of zeros
  const std::string zeros(32, '\0');
  CHECK(crc32c(zeros.data(), zeros.size()) == 0x8A9136AAu);
}

TEST_CASE("crc32c portable and hardware paths agree, and extend composes") {
  const auto v = taskmoe_test::random_floats(1000, 7);
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  // Offsets start at p + 1 (unaligned); n <= 3999 keeps p + 1 + n inside the 4000 bytes.
  for (std::size_t n : {0u, 1u, 7u, 8u, 9u, 63u, 64u, 3999u}) {
    const std::uint32_t portable = ~crc32c_update_portable(~0u, p + 1, n);  // unaligned start
    CHECK(crc32c(p + 1, n) == portable);
#if TASKMOE_DETAIL_CRC32C_HW
    if (__builtin_cpu_supports("sse4.2")) CHECK(~crc32c_update_sse42(~0u, p + 1, n) == portable);
#endif
    const std::size_t half = n / 3;
    CHECK(crc32c_extend(crc32c(p + 1, half), p + 1 + half, n - half) == portable);
  }
}

TEST_CASE("crc32c: the hardware path's three joined streams equal the portable tables") {
  // Lengths around whole rounds of three stripes (3 * crc32c_stripe bytes), with a carried state.
  const std::size_t round = 3 * crc32c_stripe;
  const auto v = taskmoe_test::random_floats((3 * round + 64) / 4, 11);
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  for (std::size_t n : {round - 1, round, round + 1, 2 * round + 8, 3 * round + 63}) {
    CAPTURE(n);
    const std::uint32_t portable = ~crc32c_update_portable(~0u, p + 1, n);
    CHECK(crc32c(p + 1, n) == portable);
#if TASKMOE_DETAIL_CRC32C_HW
    if (__builtin_cpu_supports("sse4.2")) CHECK(~crc32c_update_sse42(~0u, p + 1, n) == portable);
#endif
    CHECK(crc32c_extend(crc32c(p + 1, 5), p + 6, n - 5) == portable);
  }
  // The join: moving a register past n zero bytes is multiplying it by x^(8n).
  const unsigned char zeros[64] = {};
  for (std::uint32_t reg : {0x12345678u, 0xFFFFFFFFu, 1u}) {
    CHECK(crc32c_multmodp(crc32c_x8n(64), reg) == crc32c_update_portable(reg, zeros, 64));
    CHECK(crc32c_multmodp(crc32c_x8n(3), reg) == crc32c_update_portable(reg, zeros, 3));
  }
}
