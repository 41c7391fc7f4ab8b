#include "test_helpers.hpp"

using namespace taskmoe;
using namespace taskmoe_test;

// Builds a raw safetensors file from a header JSON string and data bytes.
static std::string raw_safetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  poke<std::uint64_t>(out, 0, header.size());
  return out + header + data;
}

static void expect_bad(const std::string& bytes, const std::string& message) {
  temp_dir dir;
  write_file(dir.file("m.safetensors"), bytes);
  expect_format_error([&] { safetensors_file f(dir.file("m.safetensors")); }, dir.file("m.safetensors"),
                      message);
}

TEST_CASE("safetensors writer and reader round-trip every dtype in place") {
  temp_dir dir;
  safetensors_writer w;
  const auto f = random_floats(6, 1);
  const std::uint16_t h[3] = {0x3C00, 0x4000, 0xC000};
  const std::int8_t q[4] = {-1, 2, -3, 4};
  const std::uint8_t b[5] = {1, 2, 3, 4, 255};
  w.add_f32("a.f32", {2, 3}, f);
  w.add("b.f16", dtype::f16, {3}, h, 6);
  w.add("c.bf16", dtype::bf16, {1, 3}, h, 6);
  w.add("d.i8", dtype::i8, {2, 2}, q, 4);
  w.add("e.u8", dtype::u8, {5}, b, 5);
  w.add("scalar", dtype::f32, {}, f.data(), 4);
  w.set_metadata("format", "pt");
  w.write(dir.file("m.safetensors"));
  const safetensors_file r(dir.file("m.safetensors"));
  CHECK(r.tensors().size() == 6);
  CHECK(r.metadata()["format"] == "pt");
  const auto& a = r.tensor("a.f32");
  CHECK(a.shape == tensor_shape{2, 3});
  CHECK(to_f32(a) == f);
  CHECK(to_f32(r.tensor("b.f16")) == std::vector<float>{1.0f, 2.0f, -2.0f});
  CHECK(r.tensor("c.bf16").type == dtype::bf16);
  CHECK(std::memcmp(r.tensor("d.i8").data, q, 4) == 0);
  CHECK(std::memcmp(r.tensor("e.u8").data, b, 5) == 0);
  CHECK(r.tensor("scalar").shape.ndim() == 0);
  CHECK_THROWS_WITH_AS(r.tensor("nope"), taskmoe_test::contains("no tensor named 'nope'"), format_error);
}

TEST_CASE("safetensors reader rejects malformed files with specific messages") {
  expect_bad("abc", "truncated file");
  std::string huge(8, '\0');
  poke<std::uint64_t>(huge, 0, 200000000ull);
  expect_bad(huge, "exceeds 100 MB");
  expect_bad(raw_safetensors("{}", "").substr(0, 9), "exceeds the file size");
  expect_bad(raw_safetensors("{not json", ""), "header is not valid JSON");
  expect_bad(raw_safetensors("[]", ""), "header is not a JSON object");
  expect_bad(raw_safetensors(R"({"t": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})",
                             std::string(8, '\0')),
             "unsupported dtype 'F64'");
  expect_bad(raw_safetensors(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}})",
                             std::string(8, '\0')),
             "tensor 't': data_offsets end 16 is past the data size 8");
  expect_bad(raw_safetensors(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})",
                             std::string(8, '\0')),
             "data_offsets begin > end");
  expect_bad(raw_safetensors(R"({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})",
                             std::string(8, '\0')),
             "tensor 't': byte size 8 does not match shape (12 bytes expected)");
  expect_bad(raw_safetensors(R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296],
                                  "data_offsets": [0, 0]}})", ""),
             "tensor 't': integer overflow");
  expect_bad(raw_safetensors(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                 "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                             std::string(12, '\0')),
             "tensor data overlaps at byte 4");
  expect_bad(raw_safetensors(R"({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", ""),
             "shape entries must be non-negative integers");
  expect_bad(raw_safetensors(R"({"t": {"dtype": "F32", "shape": [1]}})", ""),
             "data_offsets must be an array of two integers");
}

TEST_CASE("a sharded index resolves tensors across shards") {
  temp_dir dir;
  safetensors_writer a, b;
  a.add_f32("x", {2}, {1.0f, 2.0f});
  b.add_f32("y", {1}, {3.0f});
  a.write(dir.file("s1.safetensors"));
  b.write(dir.file("s2.safetensors"));
  write_file(dir.file("model.safetensors.index.json"),
             R"({"metadata": {}, "weight_map": {"x": "s1.safetensors", "y": "s2.safetensors"}})");
  const auto arch = safetensors_archive::open_index(dir.file("model.safetensors.index.json"));
  CHECK(arch.names() == std::vector<std::string>{"x", "y"});
  CHECK(to_f32(arch.tensor("y")) == std::vector<float>{3.0f});
  CHECK(arch.file_of("x") == dir.file("s1.safetensors"));
  write_file(dir.file("bad.index.json"), R"({"weight_map": {"z": "s1.safetensors"}})");
  CHECK_THROWS_WITH_AS(safetensors_archive::open_index(dir.file("bad.index.json")),
                       taskmoe_test::contains("tensor 'z' listed in"), format_error);
  write_file(dir.file("evil.index.json"), R"({"weight_map": {"x": "../s1.safetensors"}})");
  CHECK_THROWS_WITH_AS(safetensors_archive::open_index(dir.file("evil.index.json")),
                       taskmoe_test::contains("must be a plain file name"), format_error);
}
