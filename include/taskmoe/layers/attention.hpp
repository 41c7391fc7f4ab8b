#pragma once
// Multi-head scaled dot-product attention on already-projected queries, keys and values.
// Heads are contiguous column blocks of width d_head in each row (PyTorch's view(B, T, h, dh)).
// Loops, not GEMMs: attention is a few percent of the work at translation lengths, and the
// decoder's one-query-per-row shape does not suit a GEMM anyway.

#include <cmath>    // std::sqrt
#include <cstddef>  // std::size_t
#include <vector>   // std::vector

#include <taskmoe/kernels/elementwise.hpp>  // softmax

namespace taskmoe {
namespace layers {

// For each query row i < lq and head h:
//   out[i, h] = softmax_j( q[i, h] · k[j, h] / sqrt(dh) ) v[j, h],  j < visible(i)
// where visible(i) = lk, or min(lk, i + 1 + causal_offset) when causal_offset >= 0 (query i sits
// at key position i + causal_offset). `scores` is scratch (resized as needed).
inline void multi_head_attention(const float* q, int ldq, int lq, const float* k, int ldk,
                                 const float* v, int ldv, int lk, int heads, int dh,
                                 int causal_offset, float* out, int ldo,
                                 std::vector<float>& scores) {
  if (scores.size() < static_cast<std::size_t>(lk)) scores.resize(static_cast<std::size_t>(lk));
  const float scale = static_cast<float>(std::sqrt(static_cast<double>(dh)));
  float* s = scores.data();
  for (int i = 0; i < lq; ++i) {
    const int n = causal_offset < 0 ? lk : (i + 1 + causal_offset < lk ? i + 1 + causal_offset : lk);
    const float* qi = q + static_cast<std::size_t>(i) * ldq;
    float* oi = out + static_cast<std::size_t>(i) * ldo;
    for (int h = 0; h < heads; ++h) {
      const float* qh = qi + h * dh;
      for (int j = 0; j < n; ++j) {
        const float* kj = k + static_cast<std::size_t>(j) * ldk + h * dh;
        float acc = 0.0f;
        for (int c = 0; c < dh; ++c) acc += qh[c] * kj[c];
        s[j] = acc / scale;
      }
      kernels::softmax(s, 1, n, n, s, n);
      float* oh = oi + h * dh;
      for (int c = 0; c < dh; ++c) oh[c] = 0.0f;
      for (int j = 0; j < n; ++j) {
        const float p = s[j];
        const float* vj = v + static_cast<std::size_t>(j) * ldv + h * dh;
        for (int c = 0; c < dh; ++c) oh[c] += p * vj[c];
      }
    }
  }
}

}  // namespace layers
}  // namespace taskmoe
