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
    for (int i = 0; i < m; ++i) {
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
