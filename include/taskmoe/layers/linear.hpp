#pragma once
// A Linear layer y = x Wᵀ + b over row-major activations, on f32 or int8 (per-row scaled) weights.

#include <taskmoe/kernels/elementwise.hpp>  // layer_norm
#include <taskmoe/kernels/gemm.hpp>      // gemm_f32, gemm_int8
#include <taskmoe/model/weights.hpp>     // weight_matrix

namespace taskmoe {
namespace layers {

struct linear {
  model::weight_matrix weight;   // [out, in]
  const float* bias = nullptr;   // [out] or null

  int out_features() const noexcept { return weight.rows; }
  int in_features() const noexcept { return weight.cols; }

  // y [m, out] (ldy) = x [m, in] (ldx) Wᵀ + b. Single-threaded; safe to call concurrently.
  void forward(const float* x, int m, int ldx, float* y, int ldy) const {
    if (m == 0) return;
    if (weight.is_int8()) {
      kernels::gemm_int8(m, weight.rows, weight.cols, x, ldx, weight.i8, weight.cols, weight.scales,
                         y, ldy, bias);
    } else {
      kernels::gemm_f32(m, weight.rows, weight.cols, 1.0f, x, ldx, weight.f32, weight.cols, 0.0f, y,
                        ldy, bias);
    }
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
