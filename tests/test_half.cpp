#include "test_helpers.hpp"

#include <cmath>
#include <limits>

using namespace taskmoe::detail;

TEST_CASE("f16 conversion of exact values round-trips") {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 0.000061035156f /*2^-14*/,
                  5.9604645e-08f /*2^-24*/}) {
    CHECK(f16_to_f32(f32_to_f16(f)) == f);
    CHECK(std::signbit(f16_to_f32(f32_to_f16(f))) == std::signbit(f));
  }
  CHECK(f32_to_f16(1.0f) == 0x3C00);
  CHECK(f32_to_f16(-2.0f) == 0xC000);
  CHECK(f32_to_f16(65504.0f) == 0x7BFF);
  CHECK(f32_to_f16(5.9604645e-08f) == 0x0001);
}

TEST_CASE("every f16 bit pattern survives f16 -> f32 -> f16") {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    const float f = f16_to_f32(b);
    if (std::isnan(f)) {
      CHECK(std::isnan(f16_to_f32(f32_to_f16(f))));
    } else {
      REQUIRE(f32_to_f16(f) == b);
    }
  }
}

TEST_CASE("f32 -> f16 rounds to nearest, ties to even") {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);
  // 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even): rounds up.
  CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);
  // just above halfway rounds up
  CHECK(f32_to_f16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)) == 0x3C01);
  // subnormal tie: 1.5 * 2^-24 -> 2 * 2^-24 (even); 2^-25 -> 0
  CHECK(f32_to_f16(1.5f * std::ldexp(1.0f, -24)) == 0x0002);
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);
  CHECK(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
  // overflow: 65519 rounds down to 65504, 65520 rounds to infinity
  CHECK(f32_to_f16(65519.0f) == 0x7BFF);
  CHECK(f32_to_f16(65520.0f) == 0x7C00);
  CHECK(f32_to_f16(-1e10f) == 0xFC00);
}

TEST_CASE("f16 infinities and NaN") {
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(f32_to_f16(inf) == 0x7C00);
  CHECK(f32_to_f16(-inf) == 0xFC00);
  CHECK(std::isinf(f16_to_f32(0x7C00)));
  const std::uint16_t n = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  CHECK((n & 0x7C00) == 0x7C00);
  CHECK((n & 0x3FF) != 0);
  // a NaN whose payload sits only in the low bits must not become infinity
  CHECK(std::isnan(f16_to_f32(f32_to_f16(bits_float(0x7F800001u)))));
}

TEST_CASE("bf16 conversion rounds to nearest even and keeps NaN") {
  CHECK(f32_to_bf16(1.0f) == 0x3F80);
  CHECK(bf16_to_f32(0x3F80) == 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);
  CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82);
  CHECK(f32_to_bf16(std::numeric_limits<float>::infinity()) == 0x7F80);
  CHECK(f32_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);  // overflow to inf
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(bits_float(0x7F800001u)))));
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_f32(static_cast<std::uint16_t>(h));
    if (!std::isnan(f)) REQUIRE(f32_to_bf16(f) == h);
  }
}
