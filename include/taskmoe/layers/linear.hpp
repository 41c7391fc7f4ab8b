#pragma once
// A Linear layer y = x Wᵀ + b over row-major activations, on f32, f16 or int8 (per-row scaled)
// weights. All run packed (kernels/packed_gemm.hpp): the model packs them once at load (f16 as
// f32, or quantized to int8). An f32 layer that was not packed runs kernels::gemm_f32 on the
// weights in place.

#include <cstddef>  // std::size_t
#include <cstdint>  // std::int8_t
#include <cstring>  // std::memcpy
#include <memory>   // std::shared_ptr
#include <string>   // std::to_string
#include <vector>   // std::vector

#include <taskmoe/error.hpp>                // invalid_argument_error
#include <taskmoe/kernels/elementwise.hpp>  // layer_norm, relu, from_float16
#include <taskmoe/kernels/gemm.hpp>         // gemm_f32
#include <taskmoe/kernels/packed_gemm.hpp>  // packed_int8, packed_f32, their GEMMs
#include <taskmoe/kernels/parallel.hpp>     // intra_op_threads
#include <taskmoe/tensor/weight_matrix.hpp> // weight_matrix

namespace taskmoe {
namespace layers {

struct linear {
  weight_matrix weight;          // [out, in] as stored (f32 used in place; others kept for lookups)
  const float* bias = nullptr;   // [out] or null
  std::shared_ptr<const kernels::packed_int8> packed;  // int8: the packed weights, bias included
  std::shared_ptr<const kernels::packed_f32> packed_f32;  // f32: the packed weights, bias included

  int out_features() const noexcept { return packed ? packed->rows() : packed_f32 ? packed_f32->rows() : weight.rows; }
  int in_features() const noexcept { return packed ? packed->cols() : packed_f32 ? packed_f32->cols() : weight.cols; }

  // This layer's int8 weight and bias as one part of a packed matrix (kernels/packed_gemm.hpp),
  // its scales and bias multiplied by `multiplier` (a task gate).
  kernels::packed_int8::part packed_part(float multiplier = 1.0f) const noexcept {
    return {weight.i8, weight.rows, weight.cols, weight.scales, bias, multiplier};
  }

  // This layer's f32 weight and bias as one part of a packed f32 matrix.
  kernels::packed_f32::part packed_f32_part() const noexcept { return {weight.f32, weight.rows, weight.cols, bias}; }

  // Packs the weights once (int8 must be packed, stored as `int8` says; f16 packed as f32; f32
  // may run unpacked). No-op when done.
  void pack(kernels::int8_weights int8 = kernels::int8_weights::full) {
    if (packed || packed_f32 || weight.empty()) return;
    if (weight.is_int8()) {
      packed = std::make_shared<const kernels::packed_int8>(kernels::packed_int8::pack({packed_part()}, weight.cols, int8));
    } else if (weight.is_f16()) {
      const std::vector<float> w = float_rows(nullptr, weight.rows);
      packed_f32 = std::make_shared<const kernels::packed_f32>(
          kernels::packed_f32::pack({{w.data(), weight.rows, weight.cols, bias}}, weight.cols));
    } else {
      packed_f32 = std::make_shared<const kernels::packed_f32>(kernels::packed_f32::pack({packed_f32_part()}, weight.cols));
    }
  }

  // Packs an int8 copy of float (f32 or f16) weights, quantized per row as the converter does
  // (the output projection of an int8 model). No-op when packed; int8 weights pack as they are.
  void pack_quantized(kernels::int8_weights int8 = kernels::int8_weights::full) {
    if (packed || packed_f32 || weight.empty()) return;
    if (weight.is_int8()) return pack(int8);
    const int n = weight.rows, k = weight.cols;
    packed = std::make_shared<const kernels::packed_int8>(
        weight.is_f16() ? kernels::quantize_pack(weight.f16, n, k, k, bias, int8)
                        : kernels::quantize_pack(weight.f32, n, k, k, bias, int8));
  }

  // A packed layer computing only output features `rows` (in that order; each in [0, out)), each
  // with the same result as this layer's: the same weights (int8 rows, or float rows quantized per
  // row as quantize_pack does when this layer runs an int8 copy of float weights; full or narrow as
  // this layer's), the same kernel per column. The target-vocabulary shortlist
  // (decoding/vocabulary_map.hpp). Needs `weight`.
  linear select_rows(const std::vector<int>& rows) const {
    if (weight.empty()) throw invalid_argument_error("linear::select_rows: no source weights");
    const int n = static_cast<int>(rows.size()), k = weight.cols;
    const std::size_t ldk = static_cast<std::size_t>(k);
    for (int r : rows)
      if (r < 0 || r >= weight.rows)
        throw invalid_argument_error("linear::select_rows: row " + std::to_string(r) + " outside [0, " +
                                     std::to_string(weight.rows) + ")");
    std::vector<float> b;
    if (bias != nullptr)
      for (int r : rows) b.push_back(bias[r]);
    const float* bp = bias != nullptr ? b.data() : nullptr;
    linear out;
    const kernels::int8_weights int8 = packed ? packed->weights() : kernels::int8_weights::full;
    if (weight.is_int8()) {
      std::vector<std::int8_t> w(static_cast<std::size_t>(n) * ldk);
      std::vector<float> s(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) {
        std::memcpy(w.data() + i * ldk, weight.i8 + static_cast<std::size_t>(rows[i]) * ldk, ldk);
        s[static_cast<std::size_t>(i)] = weight.scales[rows[i]];
      }
      out.packed = std::make_shared<const kernels::packed_int8>(
          kernels::packed_int8::pack({{w.data(), n, k, s.data(), bp, 1.0f}}, k, int8));
      return out;
    }
    const std::vector<float> w = float_rows(rows.data(), n);
    if (packed)  // int8 copy of float weights
      out.packed = std::make_shared<const kernels::packed_int8>(kernels::quantize_pack(w.data(), n, k, k, bp, int8));
    else
      out.packed_f32 = std::make_shared<const kernels::packed_f32>(kernels::packed_f32::pack({{w.data(), n, k, bp}}, k));
    return out;
  }

  // Rows rows[0..n) of float weights (rows 0..n when null) as f32: copied, or widened exactly
  // from f16.
  std::vector<float> float_rows(const int* rows, int n) const {
    const std::size_t k = static_cast<std::size_t>(weight.cols);
    std::vector<float> w(static_cast<std::size_t>(n) * k);
    for (int i = 0; i < n; ++i) {
      const std::size_t from = static_cast<std::size_t>(rows ? rows[i] : i) * k;
      if (weight.is_f16())
        kernels::from_float16(weight.f16 + from, weight.cols, w.data() + i * k);
      else
        std::memcpy(w.data() + i * k, weight.f32 + from, k * sizeof(float));
    }
    return w;
  }

  // Bytes of this layer's packed copy of its weights (0 before pack()).
  std::size_t packed_bytes() const noexcept {
    return packed ? packed->bytes() : packed_f32 ? packed_f32->bytes() : 0;
  }

  // y [m, out] (ldy) = x [m, in] (ldx) Wᵀ + b, then ReLU when `relu`, added to y when
  // `accumulate`. Uses kernels::intra_op_threads() threads; safe to call concurrently.
  void forward(const float* x, int m, int ldx, float* y, int ldy, bool relu = false,
               bool accumulate = false) const {
    if (m == 0) return;
    if (packed) {
      kernels::gemm_packed_int8(m, x, ldx, *packed, y, ldy, {relu, accumulate, 0});
      return;
    }
    if (packed_f32) {
      kernels::gemm_packed_f32(m, x, ldx, *packed_f32, y, ldy, {relu, accumulate, 0});
      return;
    }
    if (weight.f32 == nullptr) throw invalid_argument_error("linear: int8 or float16 weights were not packed");
    kernels::gemm_options go;
    go.threads = kernels::intra_op_threads();
    kernels::gemm_f32(m, weight.rows, weight.cols, 1.0f, x, ldx, weight.f32, weight.cols,
                      accumulate ? 1.0f : 0.0f, y, ldy, bias, go);
    if (relu)
      for (int r = 0; r < m; ++r) kernels::relu(y + static_cast<std::size_t>(r) * ldy, static_cast<std::size_t>(weight.rows));
  }
};

// Layer norm parameters; `apply` normalises rows of x into y (may alias).
struct layer_norm {
  const float* gamma = nullptr;
  const float* beta = nullptr;
  float eps = 1e-5f;
  bool present() const noexcept { return gamma != nullptr; }
  void apply(const float* x, int rows, int d, float* y) const {
    if (rows > 0) kernels::layer_norm(x, rows, d, d, gamma, beta, eps, y, d);
  }
};

}  // namespace layers
}  // namespace taskmoe
