#pragma once
// AVX2 (+FMA) kernels. Every function here carries __attribute__((target("avx2,fma"))), so this
// header compiles and links in a baseline x86-64 build; the dispatchers call these only when
// active_isa() >= isa::avx2. Kernels not defined here fall back to arch/generic.hpp.
//
// int8 scheme (the "sign trick"). AVX2 has no signed x signed byte multiply; vpmaddubsw multiplies
// unsigned bytes by signed bytes and adds adjacent pairs into int16 *with saturation*. We feed it
//     u = |a|            (vpabsb; a in [-127, 127] so u in [0, 127])
//     s = sign(b, a)     (vpsignb: b, -b or 0 as a is >0, <0 or 0; b in [-127, 127])
// so that u * s == a * b exactly, and each int16 pair sum is at most 2 * 127 * 127 = 32258 <
// 32767: it never saturates. vpmaddwd with ones then widens pairs to int32 and vpaddd accumulates.
// This relies on both operands being in [-127, 127]; quantize_rows_int8 never produces -128
// (and the public GEMM rejects nothing: -128 in *weights* is still exact since |a| <= 127 bounds
// each product by 127 * 128, pair sum 32512; -128 in *activations* could saturate, so activations
// always come from our quantizer).

#include <cstddef>  // std::size_t
#include <cstdint>  // int8_t, int32_t

#include <taskmoe/kernels/isa.hpp>  // TASKMOE_KERNELS_X86

#if TASKMOE_KERNELS_X86
#include <immintrin.h>  // AVX2 intrinsics (usable inside target("avx2") functions)

namespace taskmoe {
namespace kernels {
namespace detail {
namespace avx2 {

#define TASKMOE_TARGET_AVX2 __attribute__((target("avx2,fma")))

// acc += a * b for 32 signed bytes (sign trick, see above); ua = |a| is hoisted by the caller.
TASKMOE_TARGET_AVX2 inline __m256i dot_step(__m256i acc, __m256i ua, __m256i a, __m256i b) {
  const __m256i ones = _mm256_set1_epi16(1);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(b, a)), ones));
}

TASKMOE_TARGET_AVX2 inline std::int32_t hsum(__m256i v) {
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i t = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  return _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1)));
}

inline std::int32_t dot_tail(const std::int8_t* a, const std::int8_t* b, int from, int k) {
  std::int32_t s = 0;
  for (int p = from; p < k; ++p) s += static_cast<std::int32_t>(a[p]) * b[p];
  return s;
}

// Same contract as generic::gemm_s8s8. Blocking: 4 weight rows (4 * K bytes, in L1 for K <= 4096)
// against every activation row, so each weight byte is loaded from memory once per call — at
// decoding sizes (M small) the weights dominate the traffic.
template <class Epilogue>
TASKMOE_TARGET_AVX2 void gemm_s8s8(int m, int n, int k, const std::int8_t* a, int lda,
                                   const std::int8_t* w, int ldw, const Epilogue& ep) {
  const int kv = k & ~31;
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const std::int8_t* w0 = w + static_cast<std::size_t>(j) * ldw;
    const std::int8_t* w1 = w0 + ldw;
    const std::int8_t* w2 = w1 + ldw;
    const std::int8_t* w3 = w2 + ldw;
    int i = 0;
    // 2 activation rows x 4 weight rows: each weight vector loaded once for both rows.
    for (; i + 2 <= m; i += 2) {
      const std::int8_t* ar = a + static_cast<std::size_t>(i) * lda;
      const std::int8_t* br = ar + lda;
      __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
      __m256i d0 = c0, d1 = c0, d2 = c0, d3 = c0;
      for (int p = 0; p < kv; p += 32) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ar + p));
        const __m256i bv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(br + p));
        const __m256i ua = _mm256_abs_epi8(av), ub = _mm256_abs_epi8(bv);
        __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + p));
        c0 = dot_step(c0, ua, av, wv);
        d0 = dot_step(d0, ub, bv, wv);
        wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + p));
        c1 = dot_step(c1, ua, av, wv);
        d1 = dot_step(d1, ub, bv, wv);
        wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w2 + p));
        c2 = dot_step(c2, ua, av, wv);
        d2 = dot_step(d2, ub, bv, wv);
        wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w3 + p));
        c3 = dot_step(c3, ua, av, wv);
        d3 = dot_step(d3, ub, bv, wv);
      }
      const __m256i hc = _mm256_hadd_epi32(_mm256_hadd_epi32(c0, c1), _mm256_hadd_epi32(c2, c3));
      const __m256i hd = _mm256_hadd_epi32(_mm256_hadd_epi32(d0, d1), _mm256_hadd_epi32(d2, d3));
      alignas(16) std::int32_t r[8];
      _mm_store_si128(reinterpret_cast<__m128i*>(r),
                      _mm_add_epi32(_mm256_castsi256_si128(hc), _mm256_extracti128_si256(hc, 1)));
      _mm_store_si128(reinterpret_cast<__m128i*>(r + 4),
                      _mm_add_epi32(_mm256_castsi256_si128(hd), _mm256_extracti128_si256(hd, 1)));
      ep(i, j + 0, r[0] + dot_tail(ar, w0, kv, k));
      ep(i, j + 1, r[1] + dot_tail(ar, w1, kv, k));
      ep(i, j + 2, r[2] + dot_tail(ar, w2, kv, k));
      ep(i, j + 3, r[3] + dot_tail(ar, w3, kv, k));
      ep(i + 1, j + 0, r[4] + dot_tail(br, w0, kv, k));
      ep(i + 1, j + 1, r[5] + dot_tail(br, w1, kv, k));
      ep(i + 1, j + 2, r[6] + dot_tail(br, w2, kv, k));
      ep(i + 1, j + 3, r[7] + dot_tail(br, w3, kv, k));
    }
    for (; i < m; ++i) {
      const std::int8_t* ar = a + static_cast<std::size_t>(i) * lda;
      __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
      for (int p = 0; p < kv; p += 32) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ar + p));
        const __m256i ua = _mm256_abs_epi8(av);
        c0 = dot_step(c0, ua, av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + p)));
        c1 = dot_step(c1, ua, av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + p)));
        c2 = dot_step(c2, ua, av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w2 + p)));
        c3 = dot_step(c3, ua, av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w3 + p)));
      }
      // Horizontal sums of the four accumulators in one go: lane q of the result is row j + q.
      const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(c0, c1), _mm256_hadd_epi32(c2, c3));
      alignas(16) std::int32_t r[4];
      _mm_store_si128(reinterpret_cast<__m128i*>(r),
                      _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
      ep(i, j + 0, r[0] + dot_tail(ar, w0, kv, k));
      ep(i, j + 1, r[1] + dot_tail(ar, w1, kv, k));
      ep(i, j + 2, r[2] + dot_tail(ar, w2, kv, k));
      ep(i, j + 3, r[3] + dot_tail(ar, w3, kv, k));
    }
  }
  for (; j < n; ++j) {
    const std::int8_t* wr = w + static_cast<std::size_t>(j) * ldw;
    for (int i = 0; i < m; ++i) {
      const std::int8_t* ar = a + static_cast<std::size_t>(i) * lda;
      __m256i c = _mm256_setzero_si256();
      for (int p = 0; p < kv; p += 32) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ar + p));
        c = dot_step(c, _mm256_abs_epi8(av), av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + p)));
      }
      ep(i, j, hsum(c) + dot_tail(ar, wr, kv, k));
    }
  }
}

// generic::quantize_row_int8, bit-exact (same float ops; cvtps rounds half to even like
// std::nearbyint in the default rounding mode). Returns false (q, scale untouched) on a
// non-finite value; the caller throws.
TASKMOE_TARGET_AVX2 inline bool quantize_row_int8(const float* x, int n, std::int8_t* q, float* scale) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 inf = _mm256_set1_ps(__builtin_inff());
  __m256 vmax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));  // inf or NaN
    vmax = _mm256_max_ps(vmax, a);
  }
  if (_mm256_movemask_ps(bad) != 0) return false;
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float amax = 0.0f;
  for (float v : lanes) amax = v > amax ? v : amax;
  for (; i < n; ++i) {
    const float a = x[i] < 0 ? -x[i] : x[i];
    if (!(a < __builtin_inff())) return false;
    amax = a > amax ? a : amax;
  }
  if (amax == 0.0f) {
    for (int t = 0; t < n; ++t) q[t] = 0;
    *scale = 0.0f;
    return true;
  }
  const float inv = 127.0f / amax;
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int t = 0;
  for (; t + 32 <= n; t += 32) {
    __m256i r[4];
    for (int u = 0; u < 4; ++u) {
      const __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + t + 8 * u), vinv));
      r[u] = _mm256_min_epi32(hi, _mm256_max_epi32(lo, v));
    }
    // packs works per 128-bit lane: ab = a0 b0 a1 b1 (4 int16 each), cd likewise; then bytes
    // a0 b0 c0 d0 a1 b1 c1 d1 (4 each): the dword permute restores order.
    const __m256i ab = _mm256_packs_epi32(r[0], r[1]);
    const __m256i cd = _mm256_packs_epi32(r[2], r[3]);
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + t), bytes);
  }
  for (; t < n; ++t) {
    const float r = __builtin_nearbyintf(x[t] * inv);
    q[t] = static_cast<std::int8_t>(r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r));
  }
  *scale = amax / 127.0f;
  return true;
}

// Attention helpers (layers/attention.hpp): heads are contiguous column blocks of width dh.
// s[h * lds + j] = (q_h . k_j,h) / scale for h < heads, j < n.
TASKMOE_TARGET_AVX2 inline void attention_scores(const float* q, const float* k, int ldk, int n, int heads,
                                                 int dh, float scale, float* s, int lds) {
  const int dv = dh & ~7;
  for (int h = 0; h < heads; ++h) {
    const float* qh = q + static_cast<std::size_t>(h) * dh;
    float* sh = s + static_cast<std::size_t>(h) * lds;
    for (int j = 0; j < n; ++j) {
      const float* kj = k + static_cast<std::size_t>(j) * ldk + static_cast<std::size_t>(h) * dh;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0;
      int c = 0;
      for (; c + 16 <= dv; c += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + c), _mm256_loadu_ps(kj + c), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + c + 8), _mm256_loadu_ps(kj + c + 8), a1);
      }
      for (; c < dv; c += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + c), _mm256_loadu_ps(kj + c), a0);
      const __m256 a = _mm256_add_ps(a0, a1);
      __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
      t4 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
      t4 = _mm_add_ss(t4, _mm_movehdup_ps(t4));
      float acc = _mm_cvtss_f32(t4);
      for (; c < dh; ++c) acc += qh[c] * kj[c];
      sh[j] = acc / scale;
    }
  }
}

// out[h * dh + c] = sum_j p[h * lds + j] * v[j * ldv + h * dh + c].
TASKMOE_TARGET_AVX2 inline void attention_combine(const float* p, int lds, const float* v, int ldv, int n,
                                                  int heads, int dh, float* out) {
  for (int h = 0; h < heads; ++h) {
    const float* ph = p + static_cast<std::size_t>(h) * lds;
    float* oh = out + static_cast<std::size_t>(h) * dh;
    const float* vh = v + static_cast<std::size_t>(h) * dh;
    int c = 0;
    for (; c + 32 <= dh; c += 32) {
      __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
      for (int j = 0; j < n; ++j) {
        const __m256 w = _mm256_set1_ps(ph[j]);
        const float* vj = vh + static_cast<std::size_t>(j) * ldv + c;
        o0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj), o0);
        o1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + 8), o1);
        o2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + 16), o2);
        o3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + 24), o3);
      }
      _mm256_storeu_ps(oh + c, o0);
      _mm256_storeu_ps(oh + c + 8, o1);
      _mm256_storeu_ps(oh + c + 16, o2);
      _mm256_storeu_ps(oh + c + 24, o3);
    }
    for (; c + 8 <= dh; c += 8) {
      __m256 o0 = _mm256_setzero_ps();
      for (int j = 0; j < n; ++j)
        o0 = _mm256_fmadd_ps(_mm256_set1_ps(ph[j]), _mm256_loadu_ps(vh + static_cast<std::size_t>(j) * ldv + c), o0);
      _mm256_storeu_ps(oh + c, o0);
    }
    for (; c < dh; ++c) {
      float acc = 0.0f;
      for (int j = 0; j < n; ++j) acc += ph[j] * vh[static_cast<std::size_t>(j) * ldv + c];
      oh[c] = acc;
    }
  }
}

// y[i] += b[i]; 8 floats per step.
TASKMOE_TARGET_AVX2 inline void add_inplace(float* y, const float* b, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < n; ++i) y[i] += b[i];
}

#undef TASKMOE_TARGET_AVX2

}  // namespace avx2
}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe

#endif  // TASKMOE_KERNELS_X86
