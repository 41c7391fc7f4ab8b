#pragma once
// A weight matrix as the layers see it: a view of row-major [rows, cols] f32, or i8 with one f32
// scale per row. Views only: the memory belongs to a mapped file or to the model's weight store.

#include <cstddef>  // std::size_t
#include <cstdint>  // std::int8_t
#include <cstring>  // std::memcpy

namespace taskmoe {

// A row-major [rows, cols] matrix of f32, or of i8 with one f32 scale per row.
struct weight_matrix {
  int rows = 0;
  int cols = 0;
  const float* f32 = nullptr;         // set for float weights
  const std::int8_t* i8 = nullptr;    // set for int8 weights
  const float* scales = nullptr;      // int8: [rows]
  bool is_int8() const noexcept { return i8 != nullptr; }
  bool empty() const noexcept { return f32 == nullptr && i8 == nullptr; }
  // Row r widened to f32 (embedding lookups).
  void row_to_f32(int r, float* out) const {
    const std::size_t off = static_cast<std::size_t>(r) * static_cast<std::size_t>(cols);
    if (f32 != nullptr) {
      std::memcpy(out, f32 + off, sizeof(float) * static_cast<std::size_t>(cols));
    } else {
      const float s = scales[r];
      for (int c = 0; c < cols; ++c) out[c] = static_cast<float>(i8[off + c]) * s;
    }
  }
};

}  // namespace taskmoe
