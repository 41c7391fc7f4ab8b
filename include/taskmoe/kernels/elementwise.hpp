#pragma once
// Row-wise and elementwise kernels for the Transformer: layer_norm, softmax, log_softmax, relu,
// gelu, bias and residual adds, top-k and argmax. Row-major matrices with leading dimensions;
// output may alias input (in-place) wherever the signature takes both.
//
// Defined behaviour at the edges (the decoder relies on it):
//   softmax     a fully masked row (all -inf) -> all zeros, never NaN
//   log_softmax a fully masked row -> all -inf
//   layer_norm  a constant row -> beta (the centered values are exactly 0)
//   top_k       sorted by value descending; ties -> lower index first; NaN never beats a number
//   argmax      ties -> lowest index; NaN never beats a number (all-NaN row -> 0)
// Vectorised with xsimd at the baseline ISA (arch/generic.hpp); adds use AVX2 / AVX-512 via
// runtime dispatch (arch/avx2.hpp, arch/avx512.hpp).

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint16_t
#include <type_traits>  // std::is_same
#include <string>   // std::to_string

#include <taskmoe/kernels/arch/avx2.hpp>     // detail::avx2::add_inplace
#include <taskmoe/kernels/arch/avx512.hpp>   // detail::avx512::add_inplace
#include <taskmoe/kernels/arch/generic.hpp>  // detail::generic::*
#include <taskmoe/kernels/detail/args.hpp>   // argument checks
#include <taskmoe/kernels/isa.hpp>           // active_isa

namespace taskmoe {
namespace kernels {

namespace detail {

inline void add_row(float* y, const float* b, int n) {
  switch (active_isa()) {
#if TASKMOE_KERNELS_X86
    case isa::avx512: avx512::add_inplace(y, b, n); return;
    case isa::avx2: avx2::add_inplace(y, b, n); return;
#endif
    default: generic::add_inplace(y, b, n); return;
  }
}

inline void check_rows(const char* kernel, const float* x, int rows, int cols, int ldx, const float* y,
                       int ldy) {
  check_matrix(kernel, "x", x, rows, cols, ldx);
  check_matrix(kernel, "y", y, rows, cols, ldy);
}

// True when a ranks before b (value descending, then index ascending); NaN ranks last.
inline bool ranks_before(float va, int ia, float vb, int ib) {
  if (va != va) return false;
  if (vb != vb) return true;
  return va > vb || (va == vb && ia < ib);
}

}  // namespace detail

// y[r] = (x[r] - mean) / sqrt(var + eps) * gamma + beta for each of `rows` rows of length d.
// gamma / beta may be null (1 / 0). eps must be >= 0.
inline void layer_norm(const float* x, int rows, int d, int ldx, const float* gamma,
                       const float* beta, float eps, float* y, int ldy) {
  detail::check_rows("layer_norm", x, rows, d, ldx, y, ldy);
  if (!(eps >= 0.0f)) detail::fail("layer_norm", "eps must be >= 0");
  if (rows > 0 && d == 0) detail::fail("layer_norm", "d must be > 0");
  for (int r = 0; r < rows; ++r) {
    detail::generic::layer_norm_row(x + static_cast<std::size_t>(r) * ldx, d, gamma, beta, eps,
                                    y + static_cast<std::size_t>(r) * ldy);
  }
}

namespace detail {
// The wide attention kernels take float keys of any head width, float16 ones in whole registers.
template <class T>
inline bool wide_attention(int dh, int lanes) noexcept {
  return std::is_same<T, float>::value || dh % lanes == 0;
}
}  // namespace detail

// Attention scores of one query over n keys, all heads at once (heads are contiguous column
// blocks of width dh): s[h * lds + j] = (q[h*dh ..] . k[r_j * ldk + h*dh ..]) / scale, where key
// j is row r_j = key_rows[j] of k, or row j when key_rows is null. Keys are float, or float16 bits
// (std::uint16_t: the decoder's half-precision K/V cache), converted exactly.
template <class T>
inline void attention_scores(const float* q, const T* k, int ldk, int n, int heads, int dh, float scale,
                             float* s, int lds, const int* key_rows = nullptr) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, std::uint16_t>::value, "float or float16 keys");
  if (n <= 0 || heads <= 0) return;
  if (dh < 0 || ldk < heads * dh || lds < n) detail::fail("attention_scores", "bad sizes");
  switch (active_isa()) {
#if TASKMOE_KERNELS_X86
    case isa::avx512:
      if (detail::wide_attention<T>(dh, 16)) return detail::avx512::attention_scores(q, k, ldk, key_rows, n, heads, dh, scale, s, lds);
      break;
    case isa::avx2:
      if (detail::wide_attention<T>(dh, 8)) return detail::avx2::attention_scores(q, k, ldk, key_rows, n, heads, dh, scale, s, lds);
      break;
#endif
    default: break;
  }
  detail::generic::attention_scores(q, k, ldk, key_rows, n, heads, dh, scale, s, lds);
}

// Weighted sum of n value rows per head: out[h * dh + c] = sum_j p[h * lds + j] v[r_j * ldv + h*dh + c]
// (r_j as in attention_scores; values float or float16 bits like the keys there).
template <class T>
inline void attention_combine(const float* p, int lds, const T* v, int ldv, int n, int heads, int dh,
                              float* out, const int* key_rows = nullptr) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, std::uint16_t>::value, "float or float16 values");
  if (heads <= 0) return;
  if (n < 0 || dh < 0 || ldv < heads * dh || lds < n) detail::fail("attention_combine", "bad sizes");
  switch (active_isa()) {
#if TASKMOE_KERNELS_X86
    case isa::avx512:
      if (detail::wide_attention<T>(dh, 16)) return detail::avx512::attention_combine(p, lds, v, ldv, key_rows, n, heads, dh, out);
      break;
    case isa::avx2:
      if (detail::wide_attention<T>(dh, 8)) return detail::avx2::attention_combine(p, lds, v, ldv, key_rows, n, heads, dh, out);
      break;
#endif
    default: break;
  }
  detail::generic::attention_combine(p, lds, v, ldv, key_rows, n, heads, dh, out);
}

// y[i] = x[i] rounded to float16 bits, to nearest even (the same on every ISA); beyond 65504 in
// magnitude it is infinity.
inline void to_float16(const float* x, int n, std::uint16_t* y) {
  if (n < 0) detail::fail("to_float16", "n must be >= 0");
  switch (active_isa()) {
#if TASKMOE_KERNELS_X86
    case isa::avx512: detail::avx512::to_float16(x, n, y); return;
    case isa::avx2: detail::avx2::to_float16(x, n, y); return;
#endif
    default: detail::generic::to_float16(x, n, y); return;
  }
}

// y[i] = x[i] (float16 bits) as float, exactly (the same on every ISA; a NaN stays a NaN).
inline void from_float16(const std::uint16_t* x, int n, float* y) {
  if (n < 0) detail::fail("from_float16", "n must be >= 0");
  switch (active_isa()) {
#if TASKMOE_KERNELS_X86
    case isa::avx512: detail::avx512::from_float16(x, n, y); return;
    case isa::avx2: detail::avx2::from_float16(x, n, y); return;
#endif
    default: detail::generic::from_float16(x, n, y); return;
  }
}

// Softmax over each row of x [rows, cols] into y (may be x).
inline void softmax(const float* x, int rows, int cols, int ldx, float* y, int ldy) {
  detail::check_rows("softmax", x, rows, cols, ldx, y, ldy);
  for (int r = 0; r < rows; ++r) {
    detail::generic::softmax_row(x + static_cast<std::size_t>(r) * ldx, cols,
                                 y + static_cast<std::size_t>(r) * ldy);
  }
}

// log_softmax over each row of x [rows, cols] into y (may be x).
inline void log_softmax(const float* x, int rows, int cols, int ldx, float* y, int ldy) {
  detail::check_rows("log_softmax", x, rows, cols, ldx, y, ldy);
  void (*row)(const float*, int, float*) = detail::generic::log_softmax_row;
  switch (active_isa()) {
#if TASKMOE_KERNELS_X86
    case isa::avx512: row = detail::avx512::log_softmax_row; break;
    case isa::avx2: row = detail::avx2::log_softmax_row; break;
#endif
    default: break;
  }
  for (int r = 0; r < rows; ++r) row(x + static_cast<std::size_t>(r) * ldx, cols, y + static_cast<std::size_t>(r) * ldy);
}

// In place over n contiguous values.
inline void relu(float* x, std::size_t n) {
  detail::check_vector("relu", "x", x, static_cast<long long>(n));
  detail::generic::relu(x, n);
}

// Exact (erf) GELU in place over n contiguous values.
inline void gelu(float* x, std::size_t n) {
  detail::check_vector("gelu", "x", x, static_cast<long long>(n));
  detail::generic::gelu(x, n);
}

// y[r, :] += bias for each of `rows` rows of y [rows, cols] (ldy).
inline void add_bias(float* y, int rows, int cols, int ldy, const float* bias) {
  detail::check_matrix("add_bias", "y", y, rows, cols, ldy);
  detail::check_vector("add_bias", "bias", bias, rows > 0 ? cols : 0);
  for (int r = 0; r < rows; ++r) detail::add_row(y + static_cast<std::size_t>(r) * ldy, bias, cols);
}

// Residual connection: y[r, :] += x[r, :] for y [rows, cols] (ldy), x [rows, cols] (ldx).
inline void residual_add(float* y, int rows, int cols, int ldy, const float* x, int ldx) {
  detail::check_matrix("residual_add", "y", y, rows, cols, ldy);
  detail::check_matrix("residual_add", "x", x, rows, cols, ldx);
  for (int r = 0; r < rows; ++r) {
    detail::add_row(y + static_cast<std::size_t>(r) * ldy, x + static_cast<std::size_t>(r) * ldx, cols);
  }
}

// The k largest of x[0, n): indices[0..k) and values[0..k) (values may be null), best first,
// ties to the lower index. 0 <= k <= n. O(n k) worst case but O(n) in practice: once the list is
// full, only a value above its k-th (a number) can enter, since every later index loses ties, so
// whole vectors below it are skipped (beam search scans beam x vocab candidates per step).
inline void top_k(const float* x, int n, int k, int* indices, float* values) {
  detail::check_vector("top_k", "x", x, n);
  detail::check_size("top_k", "k", k);
  if (k > n) detail::fail("top_k", "k = " + std::to_string(k) + " > n = " + std::to_string(n));
  detail::check_vector("top_k", "indices", indices, k);
  if (k == 0) return;
  int filled = 0;
  for (int i = 0; i < n; ++i) {
    if (filled == k) {
      const float kth = x[indices[k - 1]];
      if (kth == kth) {  // a NaN k-th is beaten by any number: no skipping then
        i = detail::generic::skip_not_above(x, i, n, kth);
        if (i == n) break;
      }
    }
    const float v = x[i];
    if (filled == k && !detail::ranks_before(v, i, x[indices[k - 1]], indices[k - 1])) continue;
    int pos = filled < k ? filled++ : k - 1;
    while (pos > 0 && detail::ranks_before(v, i, x[indices[pos - 1]], indices[pos - 1])) {
      indices[pos] = indices[pos - 1];
      --pos;
    }
    indices[pos] = i;
  }
  if (values != nullptr) {
    for (int j = 0; j < k; ++j) values[j] = x[indices[j]];
  }
}

// Index of the largest of x[0, n), n >= 1; ties -> lowest index.
inline int argmax(const float* x, int n) {
  detail::check_vector("argmax", "x", x, n);
  if (n == 0) detail::fail("argmax", "n must be >= 1");
  int best = 0;
  for (int i = 1; i < n; ++i) {
    if (detail::ranks_before(x[i], i, x[best], best)) best = i;
  }
  return best;
}

}  // namespace kernels
}  // namespace taskmoe
