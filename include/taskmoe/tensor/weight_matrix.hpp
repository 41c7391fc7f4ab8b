#pragma once
// A weight matrix as the layers see it: a view of row-major [rows, cols] f32, i8 with one f32
// scale per row, or f16 (embedding tables: widened per looked-up row, packed before any GEMM).
// Views only: the memory belongs to a mapped file or to the model's weight store.

#include <cstddef>  // std::size_t
#include <cstdint>  // std::int8_t, std::uint16_t
#include <cstring>  // std::memcpy

#include <taskmoe/detail/half.hpp>  // f16_to_f32

namespace taskmoe {

// A row-major [rows, cols] matrix of f32, of i8 with one f32 scale per row, or of f16.
struct weight_matrix {
  int rows = 0;
  int cols = 0;
  const float* f32 = nullptr;         // set for float weights
  const std::int8_t* i8 = nullptr;    // set for int8 weights
  const float* scales = nullptr;      // int8: [rows]
  const std::uint16_t* f16 = nullptr; // set for float16 weights (bits)
  bool is_int8() const noexcept { return i8 != nullptr; }
  bool is_f16() const noexcept { return f16 != nullptr; }
  bool empty() const noexcept { return f32 == nullptr && i8 == nullptr && f16 == nullptr; }
  // Row r widened to f32 (embedding lookups).
  void row_to_f32(int r, float* out) const {
    const std::size_t off = static_cast<std::size_t>(r) * static_cast<std::size_t>(cols);
    if (f32 != nullptr) {
      std::memcpy(out, f32 + off, sizeof(float) * static_cast<std::size_t>(cols));
    } else if (f16 != nullptr) {
      for (int c = 0; c < cols; ++c) out[c] = taskmoe::detail::f16_to_f32(f16[off + c]);
    } else {
      const float s = scales[r];
      for (int c = 0; c < cols; ++c) out[c] = static_cast<float>(i8[off + c]) * s;
    }
  }
};

}  // namespace taskmoe
