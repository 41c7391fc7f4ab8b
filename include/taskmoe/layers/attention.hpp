#pragma once
// Multi-head scaled dot-product attention on already-projected queries, keys and values.
// Heads are contiguous column blocks of width d_head in each row (PyTorch's view(B, T, h, dh)).
// Per query: kernels::attention_scores (all heads), softmax per head, kernels::attention_combine
// (AVX2 + FMA when active). The decoder's one-query-per-row shape does not suit a GEMM.

#include <cmath>    // std::sqrt
#include <cstddef>  // std::size_t
#include <vector>   // std::vector

#include <taskmoe/kernels/elementwise.hpp>  // softmax

namespace taskmoe {
namespace layers {

// For each query row i < lq and head h:
//   out[i, h] = softmax_j( q[i, h] · k[j, h] / sqrt(dh) ) v[j, h],  j < visible(i)
// where visible(i) = lk, or min(lk, i + 1 + causal_offset) when causal_offset >= 0 (query i sits
// at key position i + causal_offset). Key / value j is row key_rows[j] of k / v (row j when
// key_rows is null). `scores` is scratch (resized as needed). Keys and values are float, or
// float16 bits (std::uint16_t: the decoder's half-precision K/V cache).
template <class T>
inline void multi_head_attention(const float* q, int ldq, int lq, const T* k, int ldk,
                                 const T* v, int ldv, int lk, int heads, int dh,
                                 int causal_offset, float* out, int ldo,
                                 std::vector<float>& scores, const int* key_rows = nullptr) {
  const std::size_t need = static_cast<std::size_t>(heads) * static_cast<std::size_t>(lk > 0 ? lk : 1);
  if (scores.size() < need) scores.resize(need);
  const float scale = static_cast<float>(std::sqrt(static_cast<double>(dh)));
  float* s = scores.data();
  for (int i = 0; i < lq; ++i) {
    const int n = causal_offset < 0 ? lk : (i + 1 + causal_offset < lk ? i + 1 + causal_offset : lk);
    const float* qi = q + static_cast<std::size_t>(i) * ldq;
    float* oi = out + static_cast<std::size_t>(i) * ldo;
    if (n <= 0) {
      for (int c = 0; c < heads * dh; ++c) oi[c] = 0.0f;
      continue;
    }
    // scores [heads, n] for all heads at once, softmax per head, then the weighted value sums
    kernels::attention_scores(qi, k, ldk, n, heads, dh, scale, s, n, key_rows);
    kernels::softmax(s, heads, n, n, s, n);
    kernels::attention_combine(s, n, v, ldv, n, heads, dh, oi, key_rows);
  }
}

}  // namespace layers
}  // namespace taskmoe
