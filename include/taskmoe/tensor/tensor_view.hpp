#pragma once
// Non-owning views of stored tensors. Readers hand these out pointing into the memory-mapped
// file, so a view is valid only while the file object that produced it is alive.

#include <array>             // std::array
#include <cmath>             // std::isfinite
#include <cstddef>           // std::byte, std::size_t
#include <cstdint>           // std::uint64_t
#include <cstring>           // std::memcpy
#include <initializer_list>  // std::initializer_list
#include <string>            // std::string
#include <vector>            // std::vector

#include <taskmoe/detail/half.hpp>
#include <taskmoe/error.hpp>
#include <taskmoe/tensor/dtype.hpp>

namespace taskmoe {

// Up to 4 dimensions: the largest tensor in either format is [experts, rows, cols].
class tensor_shape {
 public:
  static constexpr std::size_t max_dims = 4;

  tensor_shape() = default;
  tensor_shape(std::initializer_list<std::uint64_t> dims) {
    if (dims.size() > max_dims) throw invalid_argument_error("tensor_shape: more than 4 dims");
    for (std::uint64_t d : dims) dims_[ndim_++] = d;
  }
  static tensor_shape from(const std::uint64_t* dims, std::size_t n) {
    if (n > max_dims) throw invalid_argument_error("tensor_shape: more than 4 dims");
    tensor_shape s;
    for (std::size_t i = 0; i < n; ++i) s.dims_[i] = dims[i];
    s.ndim_ = n;
    return s;
  }

  std::size_t ndim() const noexcept { return ndim_; }
  std::uint64_t operator[](std::size_t i) const noexcept { return dims_[i]; }
  const std::uint64_t* data() const noexcept { return dims_.data(); }
  // Callers only use this on validated shapes (readers check the byte size with overflow checks).
  std::uint64_t numel() const noexcept {
    std::uint64_t n = 1;
    for (std::size_t i = 0; i < ndim_; ++i) n *= dims_[i];
    return n;
  }

  friend bool operator==(const tensor_shape& a, const tensor_shape& b) noexcept {
    if (a.ndim_ != b.ndim_) return false;
    for (std::size_t i = 0; i < a.ndim_; ++i)
      if (a.dims_[i] != b.dims_[i]) return false;
    return true;
  }
  friend bool operator!=(const tensor_shape& a, const tensor_shape& b) noexcept {
    return !(a == b);
  }

  std::string to_string() const {
    std::string s = "[";
    for (std::size_t i = 0; i < ndim_; ++i) {
      if (i) s += ", ";
      s += std::to_string(dims_[i]);
    }
    return s + "]";
  }

 private:
  std::array<std::uint64_t, max_dims> dims_{};
  std::size_t ndim_ = 0;
};

struct tensor_view {
  dtype type = dtype::f32;
  tensor_shape shape;
  const std::byte* data = nullptr;  // may be unaligned for safetensors input; 64-aligned in .tmoe
  std::uint64_t byte_size = 0;
  // i8 only: one f32 scale per row, where a row is the last axis (so rows = numel / shape[last];
  // for a [out, in] matrix, one per output row). Element value = int8 * scale.
  const float* scales = nullptr;
  std::uint64_t scale_count = 0;

  std::uint64_t numel() const noexcept { return shape.numel(); }
  std::uint64_t row_length() const noexcept {
    return shape.ndim() == 0 ? 1 : shape[shape.ndim() - 1];
  }
  template <typename T>
  const T* data_as() const noexcept {
    return reinterpret_cast<const T*>(data);
  }
};

// Widen any view to float32 (i8 dequantised with its scales, u8 as 0..255). Reads element by
// element with memcpy, so unaligned safetensors data is fine.
inline void to_f32(const tensor_view& v, float* out) {
  const std::uint64_t n = v.numel();
  switch (v.type) {
    case dtype::f32:
      if (n) std::memcpy(out, v.data, n * 4);
      return;
    case dtype::f16:
    case dtype::bf16:
      for (std::uint64_t i = 0; i < n; ++i) {
        std::uint16_t h = 0;
        std::memcpy(&h, v.data + 2 * i, 2);
        out[i] = v.type == dtype::f16 ? detail::f16_to_f32(h) : detail::bf16_to_f32(h);
      }
      return;
    case dtype::i8: {
      const std::uint64_t row = v.row_length();
      for (std::uint64_t i = 0; i < n; ++i) {
        const float s = v.scales != nullptr ? v.scales[i / row] : 1.0f;
        out[i] = static_cast<float>(static_cast<signed char>(v.data[i])) * s;
      }
      return;
    }
    case dtype::u8:
      for (std::uint64_t i = 0; i < n; ++i) out[i] = static_cast<float>(v.data[i]);
      return;
  }
}

inline std::vector<float> to_f32(const tensor_view& v) {
  std::vector<float> out(static_cast<std::size_t>(v.numel()));
  to_f32(v, out.data());
  return out;
}

namespace detail {

// Element i of a float view (f32, f16 or bf16) as f32.
inline float element_f32(const tensor_view& v, std::uint64_t i) noexcept {
  if (v.type == dtype::f32) {
    float x = 0;
    std::memcpy(&x, v.data + 4 * i, 4);
    return x;
  }
  std::uint16_t h = 0;
  std::memcpy(&h, v.data + 2 * i, 2);
  return v.type == dtype::f16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// Throws format_error(file, ...) naming the tensor and element of the first NaN/Inf.
inline void check_finite(const tensor_view& v, const std::string& name, const std::string& file) {
  const std::uint64_t n = v.numel();
  for (std::uint64_t i = 0; i < n; ++i)
    if (!std::isfinite(element_f32(v, i)))
      throw format_error(file, "tensor '" + name + "' has a non-finite value at element " +
                                   std::to_string(i));
}

}  // namespace detail

}  // namespace taskmoe
