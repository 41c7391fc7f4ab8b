// libFuzzer harness: the safetensors reader (8-byte header length, JSON header, dtype / shape /
// data_offsets checks, overlap check), then every tensor it accepts widened to float32 and checked
// for finite values, as the checkpoint reader and the converter do.

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint8_t

#include "fuzz_support.hpp"

namespace {

using namespace taskmoe;

std::string st_bytes(const safetensors_writer& w) {
  const auto b = w.bytes();
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// An 8-byte little-endian length followed by `header` and `data`.
std::string raw(const std::string& header, const std::string& data = {}, std::uint64_t n = ~0ull) {
  if (n == ~0ull) n = header.size();
  std::string b(8, '\0');
  std::memcpy(&b[0], &n, 8);
  return b + header + data;
}

void write_seeds(const std::string& dir) {
  using namespace taskmoe_fuzz;
  safetensors_writer w;
  w.add_f32("a", {2, 3}, random_floats(6, 1));
  const std::uint16_t h[4] = {0x3c00, 0x7c00, 0x0001, 0xfe00};  // 1, inf, subnormal, nan
  w.add("half", dtype::f16, {4}, h, sizeof h);
  w.add("brain", dtype::bf16, {2, 2}, h, sizeof h);
  const std::int8_t q[3] = {-128, 0, 127};
  w.add("q", dtype::i8, {3}, q, sizeof q);
  const std::uint8_t u[2] = {0, 255};
  w.add("u", dtype::u8, {2}, u, sizeof u);
  w.add("empty", dtype::f32, {0, 4}, nullptr, 0);
  w.add_f32("scalar", {}, {1.5f});
  w.set_metadata("format", "pt");
  const std::string good = st_bytes(w);
  write_seed(dir, "mixed.safetensors", good);
  // The corruptions test_safetensors.cpp makes by hand.
  write_seed(dir, "short", good.substr(0, 5));
  write_seed(dir, "header-too-big", raw("{}", "", 200000000));
  write_seed(dir, "header-past-end", raw("{}", "", 100));
  write_seed(dir, "not-json", raw("{\"a\": [1, 2"));
  write_seed(dir, "not-object", raw("[1,2,3]"));
  write_seed(dir, "bad-dtype", raw(R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\0')));
  write_seed(dir, "offsets-past-end", raw(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')));
  write_seed(dir, "offsets-reversed", raw(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", std::string(8, '\0')));
  write_seed(dir, "shape-overflow", raw(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"));
  write_seed(dir, "negative-dim", raw(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0')));
  write_seed(dir, "overlap", raw(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, '\0')));
  write_seed(dir, "bad-metadata", raw(R"({"__metadata__":[1]})"));
}

}  // namespace

TASKMOE_FUZZ_SEEDS(write_seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static taskmoe_fuzz::memory_file file;
  try {
    const safetensors_file f(file.set(data, size));
    (void)f.metadata();
    for (const auto& kv : f.tensors()) {
      const tensor_view& v = kv.second;
      if (v.numel() > (1u << 20)) continue;  // shapes are bounded by the input; keep it quick
      (void)to_f32(v);
      if (v.type == dtype::f32 || v.type == dtype::f16 || v.type == dtype::bf16) {
        try {
          detail::check_finite(v, kv.first, f.path());
        } catch (const format_error&) {
        }
      }
    }
  } catch (const taskmoe::error&) {
  }
  return 0;
}
