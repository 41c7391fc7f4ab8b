#include "test_helpers.hpp"

using namespace taskmoe;

TEST_CASE("dtype names, sizes and codes") {
  CHECK(dtype_size(dtype::f32) == 4);
  CHECK(dtype_size(dtype::f16) == 2);
  CHECK(dtype_size(dtype::bf16) == 2);
  CHECK(dtype_size(dtype::i8) == 1);
  CHECK(dtype_size(dtype::u8) == 1);
  for (std::uint8_t c = 0; c < dtype_count; ++c) {
    const auto t = static_cast<dtype>(c);
    CHECK(dtype_from_name(dtype_name(t)) == t);
    CHECK(dtype_from_safetensors_name(safetensors_dtype_name(t)) == t);
  }
  CHECK(!dtype_from_name("f64"));
  CHECK(!is_valid_dtype_code(5));
}

TEST_CASE("tensor_shape counts elements, compares and prints") {
  const tensor_shape s{2, 3, 4};
  CHECK(s.ndim() == 3);
  CHECK(s.numel() == 24);
  CHECK(s == tensor_shape{2, 3, 4});
  CHECK(s != tensor_shape{2, 3});
  CHECK(s.to_string() == "[2, 3, 4]");
  CHECK(tensor_shape{}.numel() == 1);
  CHECK_THROWS_AS((tensor_shape{1, 2, 3, 4, 5}), invalid_argument_error);
}

TEST_CASE("to_f32 dequantises i8 with one scale per row") {
  const std::int8_t q[6] = {1, -2, 3, 4, 5, -6};
  const float scales[2] = {0.5f, 2.0f};
  tensor_view v;
  v.type = dtype::i8;
  v.shape = {2, 3};
  v.data = reinterpret_cast<const std::byte*>(q);
  v.byte_size = 6;
  v.scales = scales;
  v.scale_count = 2;
  CHECK(to_f32(v) == std::vector<float>{0.5f, -1.0f, 1.5f, 8.0f, 10.0f, -12.0f});
}
