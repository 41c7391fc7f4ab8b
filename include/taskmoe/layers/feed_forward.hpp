#pragma once
// Position-wise feed-forward y = fc2(act(fc1(x))), the dense FFN and one MoE expert.

#include <cstddef>  // std::size_t
#include <vector>   // std::vector

#include <taskmoe/format/architecture.hpp>  // activation
#include <taskmoe/kernels/elementwise.hpp>  // relu, gelu
#include <taskmoe/layers/linear.hpp>        // linear

namespace taskmoe {
namespace layers {

inline void apply_activation(activation act, float* x, std::size_t n) {
  if (n == 0) return;
  if (act == activation::relu)
    kernels::relu(x, n);
  else
    kernels::gelu(x, n);
}

struct feed_forward {
  linear fc1;  // [d_ff, d]
  linear fc2;  // [d, d_ff]
  activation act = activation::relu;

  void pack(kernels::int8_weights int8 = kernels::int8_weights::full) {
    fc1.pack(int8);
    fc2.pack(int8);
  }
  std::size_t packed_bytes() const noexcept { return fc1.packed_bytes() + fc2.packed_bytes(); }

  // y [m, d] = fc2(act(fc1(x [m, d]))); `hidden` is scratch. ReLU is fused into fc1.
  void forward(const float* x, int m, int ldx, float* y, int ldy, std::vector<float>& hidden) const {
    const int ff = fc1.out_features();
    const std::size_t n = static_cast<std::size_t>(m) * static_cast<std::size_t>(ff);
    if (hidden.size() < n) hidden.resize(n);
    fc1.forward(x, m, ldx, hidden.data(), ff, act == activation::relu);
    if (act != activation::relu) apply_activation(act, hidden.data(), n);
    fc2.forward(hidden.data(), m, ff, y, ldy);
  }
};

}  // namespace layers
}  // namespace taskmoe
