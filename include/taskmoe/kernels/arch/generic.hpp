#pragma once
// Generic kernels: portable C++, vectorised with xsimd at the compile-time baseline (SSE2 on
// x86-64, NEON on arm64). Every kernel has a version here; arch/avx2.hpp and arch/avx512.hpp
// override only the ones where a wider ISA pays off, and the dispatchers in gemm.hpp and
// elementwise.hpp fall back to these for everything else (xsimd's "generic fallback" idea).
//
// These functions do no argument checking: the public wrappers validated everything already.

#include <algorithm>  // std::max, std::min
#include <cmath>      // std::sqrt, std::nearbyint, std::isfinite, std::fabs
#include <cstddef>    // std::size_t
#include <cstdint>    // int8_t, int32_t
#include <limits>     // std::numeric_limits

#include <xsimd/xsimd.hpp>  // batch<float> at the default architecture

#include <taskmoe/detail/half.hpp>               // f16_to_f32, f32_to_f16
#include <taskmoe/error.hpp>                     // invalid_argument_error
#include <taskmoe/kernels/detail/packed_args.hpp>  // packed_call

namespace taskmoe {
namespace kernels {
namespace detail {
namespace generic {

using fbatch = xsimd::batch<float>;
constexpr int lanes = static_cast<int>(fbatch::size);

// ---- int8 -------------------------------------------------------------------------------------

// Symmetric per-row quantization: scale = max|x| / 127, q = round(x / scale) in [-127, 127].
// -128 is never produced, which keeps the AVX2 sign trick (arch/avx2.hpp) free of overflow. An
// all-zero row (or one below about 3.7e-37) gets scale 0 and q = 0. Non-finite values cannot be quantized: they throw.
inline void quantize_row_int8(const float* x, int n, std::int8_t* q, float* scale) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      throw invalid_argument_error("taskmoe::kernels::quantize_rows_int8: non-finite value");
    }
    amax = std::max(amax, std::fabs(x[i]));
  }
  // An all-zero row, or one so small (max|x| < 127 / FLT_MAX, about 3.7e-37) that 127 / amax
  // overflows: 0 * inf would be NaN (found by tests/fuzz/fuzz_tmoe). Both quantize to zeros.
  const float inv = 127.0f / amax;
  if (!(inv < std::numeric_limits<float>::infinity())) {
    for (int i = 0; i < n; ++i) q[i] = 0;
    *scale = 0.0f;
    return;
  }
  for (int i = 0; i < n; ++i) {
    const float r = std::nearbyint(x[i] * inv);
    q[i] = static_cast<std::int8_t>(std::min(127.0f, std::max(-127.0f, r)));
  }
  *scale = amax / 127.0f;
}

// A key / value element as float: float32 as stored, float16 bits (the K/V cache's half form)
// converted exactly.
inline float kv_float(float x) noexcept { return x; }
inline float kv_float(std::uint16_t h) noexcept { return taskmoe::detail::f16_to_f32(h); }

// Attention helpers (the plain reference for arch/avx2.hpp's versions; see layers/attention.hpp).
template <class T>
inline void attention_scores(const float* q, const T* k, int ldk, const int* rows, int n, int heads,
                             int dh, float scale, float* s, int lds) {
  for (int h = 0; h < heads; ++h) {
    const float* qh = q + static_cast<std::size_t>(h) * dh;
    for (int j = 0; j < n; ++j) {
      const T* kj = k + key_row(rows, j) * ldk + static_cast<std::size_t>(h) * dh;
      float acc = 0.0f;
      for (int c = 0; c < dh; ++c) acc += qh[c] * kv_float(kj[c]);
      s[static_cast<std::size_t>(h) * lds + j] = acc / scale;
    }
  }
}

template <class T>
inline void attention_combine(const float* p, int lds, const T* v, int ldv, const int* rows, int n,
                              int heads, int dh, float* out) {
  for (int h = 0; h < heads; ++h) {
    float* oh = out + static_cast<std::size_t>(h) * dh;
    for (int c = 0; c < dh; ++c) oh[c] = 0.0f;
    for (int j = 0; j < n; ++j) {
      const float pj = p[static_cast<std::size_t>(h) * lds + j];
      const T* vj = v + key_row(rows, j) * ldv + static_cast<std::size_t>(h) * dh;
      for (int c = 0; c < dh; ++c) oh[c] += pj * kv_float(vj[c]);
    }
  }
}

inline void to_float16(const float* x, int n, std::uint16_t* y) {
  for (int i = 0; i < n; ++i) y[i] = taskmoe::detail::f32_to_f16(x[i]);
}

inline void from_float16(const std::uint16_t* x, int n, float* y) {
  for (int i = 0; i < n; ++i) y[i] = taskmoe::detail::f16_to_f32(x[i]);
}

// C_int[i, j] = sum_k a[i, k] * w[j, k] for i < m, j < n, handed to ep(i, j, value) exactly once
// each. The integer result is exact (|sum| <= K * 127 * 127 fits int32 for K < 133,000).
template <class Epilogue>
void gemm_s8s8(int m, int n, int k, const std::int8_t* a, int lda, const std::int8_t* w, int ldw,
               const Epilogue& ep) {
  for (int j = 0; j < n; ++j) {
    const std::int8_t* wr = w + static_cast<std::size_t>(j) * ldw;
    for (int i = 0; i < m; ++i) {
      const std::int8_t* ar = a + static_cast<std::size_t>(i) * lda;
      std::int32_t acc = 0;
      for (int p = 0; p < k; ++p) acc += static_cast<std::int32_t>(ar[p]) * wr[p];
      ep(i, j, acc);
    }
  }
}

// The epilogue every packed kernel applies per output, in this order (the SIMD versions do the
// same float operations lane-wise, so all ISAs round identically): scale and bias in one fused
// multiply-add (explicit, so no compiler's contraction choice can change the rounding), ReLU,
// store or add.
inline float packed_epilogue(const packed_call& g, int i, int j, std::int32_t v) {
  const float s = g.a_scales[i] * g.w_scales[j];
  float r = g.bias != nullptr ? std::fma(static_cast<float>(v), s, g.bias[j]) : static_cast<float>(v) * s;
  if (g.relu && !(r > 0.0f)) r = 0.0f;
  return r;
}

// Packed GEMM over panels [p0, p1) with signed activations (detail/packed_args.hpp): the plain
// reference for the SIMD kernels, written so that compilers vectorise the 16-column inner loop.
inline void gemm_packed(const packed_call& g, int p0, int p1) {
  const auto* a = reinterpret_cast<const std::int8_t*>(g.a);
  constexpr int group_bytes = panel_width * k_group;
  for (int p = p0; p < p1; ++p) {
    const std::int8_t* panel = g.data + static_cast<std::size_t>(p) * g.panel_bytes();
    for (int i = 0; i < g.m; ++i) {
      const std::int8_t* ar = a + static_cast<std::size_t>(i) * g.lda;
      std::int32_t acc[panel_width] = {};
      for (int kg = 0; kg < g.k4; kg += k_group) {
        const std::int8_t* blk = panel + static_cast<std::size_t>(kg / k_group) * group_bytes;
        for (int c = 0; c < panel_width; ++c)
          for (int b = 0; b < k_group; ++b)
            acc[c] += static_cast<std::int32_t>(ar[kg + b]) * blk[c * k_group + b];
      }
      for (int c = 0; c < panel_width; ++c) {
        const int j = p * panel_width + c;
        if (j >= g.n) break;
        float* out = g.c + static_cast<std::size_t>(i) * g.ldc + j;
        const float r = packed_epilogue(g, i, j, acc[c]);
        *out = g.accumulate ? *out + r : r;
      }
    }
  }
}

// f32 packed GEMM over panels [p0, p1) (detail/packed_args.hpp): per output one fused
// multiply-add per k in ascending k from zero, then + bias, ReLU, + c. The SIMD kernels do the
// same operations lane by lane, so every ISA gives bit-identical results.
inline float packed_f32_epilogue(const packed_f32_call& g, int j, float acc, const float* out) {
  float r = acc;
  if (g.bias != nullptr) r = r + g.bias[j];
  if (g.relu && !(r > 0.0f)) r = 0.0f;
  return g.accumulate ? *out + r : r;
}

inline void gemm_packed_f32(const packed_f32_call& g, int p0, int p1) {
  for (int p = p0; p < p1; ++p) {
    const float* panel = g.data + static_cast<std::size_t>(p) * g.panel_floats();
    for (int i = 0; i < g.m; ++i) {
      const float* ar = g.a + static_cast<std::size_t>(i) * g.lda;
      float acc[panel_width] = {};
      for (int kk = 0; kk < g.k; ++kk) {
        const float* w = panel + static_cast<std::size_t>(kk) * panel_width;
        for (int c = 0; c < panel_width; ++c) acc[c] = std::fma(ar[kk], w[c], acc[c]);
      }
      for (int c = 0; c < panel_width; ++c) {
        const int j = p * panel_width + c;
        if (j >= g.n) break;
        float* out = g.c + static_cast<std::size_t>(i) * g.ldc + j;
        *out = packed_f32_epilogue(g, j, acc[c], out);
      }
    }
  }
}

// ---- elementwise ------------------------------------------------------------------------------

inline float row_sum(const float* x, int n) {
  fbatch acc(0.0f);
  int i = 0;
  for (; i + lanes <= n; i += lanes) acc += fbatch::load_unaligned(x + i);
  float s = xsimd::hadd(acc);
  for (; i < n; ++i) s += x[i];
  return s;
}

// The first i' >= i such that x[i', i' + lanes) holds a value > thr, or the start of the tail
// (fewer than `lanes` left): lets top_k skip, a vector at a time, what cannot enter its list.
inline int skip_not_above(const float* x, int i, int n, float thr) {
  const fbatch t(thr);
  while (i + lanes <= n && !xsimd::any(fbatch::load_unaligned(x + i) > t)) i += lanes;
  return i;
}

inline float row_max(const float* x, int n) {
  float m = -std::numeric_limits<float>::infinity();
  int i = 0;
  if (n >= lanes) {
    fbatch acc(m);
    for (; i + lanes <= n; i += lanes) acc = xsimd::max(acc, fbatch::load_unaligned(x + i));
    alignas(64) float tmp[lanes];
    acc.store_aligned(tmp);
    for (int l = 0; l < lanes; ++l) m = std::max(m, tmp[l]);
  }
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

// y = (x - mean) / sqrt(var + eps) * gamma + beta, two passes over x so that rows with a large
// mean do not lose the variance to cancellation. y may alias x. gamma/beta may be null (1 / 0).
inline void layer_norm_row(const float* x, int d, const float* gamma, const float* beta, float eps,
                           float* y) {
  const float mean = row_sum(x, d) / static_cast<float>(d);
  const fbatch vmean(mean);
  fbatch acc(0.0f);
  int i = 0;
  for (; i + lanes <= d; i += lanes) {
    const fbatch c = fbatch::load_unaligned(x + i) - vmean;
    acc = xsimd::fma(c, c, acc);
  }
  float var = xsimd::hadd(acc);
  for (; i < d; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= static_cast<float>(d);
  const float rstd = 1.0f / std::sqrt(var + eps);
  for (i = 0; i < d; ++i) {
    float v = (x[i] - mean) * rstd;
    if (gamma != nullptr) v *= gamma[i];
    if (beta != nullptr) v += beta[i];
    y[i] = v;
  }
}

// Numerically stable softmax. A fully masked row (every value -inf) has no defined distribution;
// it becomes all zeros so that attention over it contributes nothing instead of NaN.
inline void softmax_row(const float* x, int n, float* y) {
  const float mx = row_max(x, n);
  if (mx == -std::numeric_limits<float>::infinity()) {
    for (int i = 0; i < n; ++i) y[i] = 0.0f;
    return;
  }
  const fbatch vmx(mx);
  fbatch acc(0.0f);
  int i = 0;
  for (; i + lanes <= n; i += lanes) {
    const fbatch e = xsimd::exp(fbatch::load_unaligned(x + i) - vmx);
    e.store_unaligned(y + i);
    acc += e;
  }
  float sum = xsimd::hadd(acc);
  for (; i < n; ++i) {
    y[i] = std::exp(x[i] - mx);
    sum += y[i];
  }
  const float inv = 1.0f / sum;  // sum >= 1: the maximum contributes exp(0)
  for (i = 0; i < n; ++i) y[i] *= inv;
}

// log_softmax(x) = x - max - log(sum exp(x - max)). A fully masked row stays all -inf (every
// token impossible), which beam search treats as a dead hypothesis.
inline void log_softmax_row(const float* x, int n, float* y) {
  const float mx = row_max(x, n);
  if (mx == -std::numeric_limits<float>::infinity()) {
    for (int i = 0; i < n; ++i) y[i] = mx;
    return;
  }
  const fbatch vmx(mx);
  fbatch acc(0.0f);
  int i = 0;
  for (; i + lanes <= n; i += lanes) acc += xsimd::exp(fbatch::load_unaligned(x + i) - vmx);
  float sum = xsimd::hadd(acc);
  for (; i < n; ++i) sum += std::exp(x[i] - mx);
  const float shift = mx + std::log(sum);
  for (i = 0; i < n; ++i) y[i] = x[i] - shift;
}

inline void relu(float* x, std::size_t n) {
  const fbatch zero(0.0f);
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes) xsimd::max(fbatch::load_unaligned(x + i), zero).store_unaligned(x + i);
  for (; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), as torch.nn.GELU() (not the tanh approximation).
inline void gelu(float* x, std::size_t n) {
  const float inv_sqrt2 = 0.70710678118654752f;
  const fbatch half(0.5f), one(1.0f), c(inv_sqrt2);
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const fbatch v = fbatch::load_unaligned(x + i);
    (half * v * (one + xsimd::erf(v * c))).store_unaligned(x + i);
  }
  for (; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * inv_sqrt2));
}

// y[i] += b[i] (bias add on a row, residual add).
inline void add_inplace(float* y, const float* b, int n) {
  int i = 0;
  for (; i + lanes <= n; i += lanes) {
    (fbatch::load_unaligned(y + i) + fbatch::load_unaligned(b + i)).store_unaligned(y + i);
  }
  for (; i < n; ++i) y[i] += b[i];
}

}  // namespace generic
}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe
