#pragma once
// A Linear layer y = x Wᵀ + b over row-major activations, on f32 or int8 (per-row scaled) weights.
// int8 weights run packed (kernels/packed_gemm.hpp): the model packs them once at load.

#include <cstddef>  // std::size_t
#include <memory>   // std::shared_ptr

#include <taskmoe/error.hpp>                // invalid_argument_error
#include <taskmoe/kernels/elementwise.hpp>  // layer_norm, relu
#include <taskmoe/kernels/gemm.hpp>         // gemm_f32
#include <taskmoe/kernels/packed_gemm.hpp>  // packed_int8, gemm_packed_int8
#include <taskmoe/kernels/parallel.hpp>     // intra_op_threads
#include <taskmoe/tensor/weight_matrix.hpp> // weight_matrix

namespace taskmoe {
namespace layers {

struct linear {
  weight_matrix weight;          // [out, in] as stored (f32 used in place; int8 kept for lookups)
  const float* bias = nullptr;   // [out] or null
  std::shared_ptr<const kernels::packed_int8> packed;  // int8: the packed weights, bias included

  int out_features() const noexcept { return packed ? packed->rows() : weight.rows; }
  int in_features() const noexcept { return packed ? packed->cols() : weight.cols; }

  // This layer's int8 weight and bias as one part of a packed matrix (kernels/packed_gemm.hpp),
  // its scales and bias multiplied by `multiplier` (a task gate).
  kernels::packed_int8::part packed_part(float multiplier = 1.0f) const noexcept {
    return {weight.i8, weight.rows, weight.cols, weight.scales, bias, multiplier};
  }

  // Packs int8 weights (no-op for f32): must run once before forward.
  void pack() {
    if (!weight.is_int8() || packed) return;
    packed = std::make_shared<const kernels::packed_int8>(kernels::packed_int8::pack({packed_part()}, weight.cols));
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
    if (weight.is_int8()) throw invalid_argument_error("linear: int8 weights were not packed");
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
