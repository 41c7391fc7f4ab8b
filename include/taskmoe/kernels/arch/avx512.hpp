#pragma once
// AVX-512 kernels (F + BW + VL; VNNI when the CPU has it). Same rules as arch/avx2.hpp: every
// function carries a target attribute and runs only when active_isa() == isa::avx512.
//
// int8: AVX-512BW has no vpsignb, so the sign of a moves onto b with a mask instead:
//     u = |a| (vpabsb),  neg = a < 0 (vpmovb2m),  s = neg ? -b : b (masked vpsubb)
// and vpdpbusd(acc, u, s) (VNNI) adds the four u8*s8 products of each dword straight into int32
// without intermediate saturation. K tails use masked loads, no scalar loop.

#include <cstddef>  // std::size_t
#include <cstdint>  // int8_t, int32_t, uint64_t

#include <taskmoe/kernels/isa.hpp>  // TASKMOE_KERNELS_X86

#if TASKMOE_KERNELS_X86
#include <immintrin.h>  // AVX-512 intrinsics (usable inside target(...) functions)

namespace taskmoe {
namespace kernels {
namespace detail {
namespace avx512 {

#define TASKMOE_TARGET_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))
#define TASKMOE_TARGET_AVX512_VNNI \
  __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

// acc += a * b for 64 signed bytes; ua = |a| and neg = (a < 0) are hoisted by the caller.
TASKMOE_TARGET_AVX512_VNNI inline __m512i dot_step(__m512i acc, __m512i ua, __mmask64 neg, __m512i b) {
  return _mm512_dpbusd_epi32(acc, ua, _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b));
}

// Horizontal int32 sum. Not _mm512_reduce_add_epi32: in GCC 12 it goes through
// _mm512_extracti64x4_epi64 and _mm512_castsi512_si256, whose _mm256_undefined_si256() trips -Wmaybe-uninitialized; the
// zero-masked extracts below are the same instruction without the warning (so is the cast).
TASKMOE_TARGET_AVX512_VNNI inline std::int32_t hsum(__m512i v) {
  const __m256i h = _mm256_add_epi32(_mm512_maskz_extracti64x4_epi64(0xff, v, 0),
                                     _mm512_maskz_extracti64x4_epi64(0xff, v, 1));
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  const __m128i t = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  return _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1)));
}

// Same contract and blocking as avx2::gemm_s8s8, 64 bytes of K per step. Needs AVX512-VNNI; on
// AVX-512 CPUs without it (Skylake-SP) the dispatcher uses the AVX2 kernel instead, which keeps
// every instruction of this function inside one target (a vnni helper could not be inlined into a
// non-vnni caller).
template <class Epilogue>
TASKMOE_TARGET_AVX512_VNNI void gemm_s8s8(int m, int n, int k, const std::int8_t* a, int lda,
                                     const std::int8_t* w, int ldw, const Epilogue& ep) {
  const int kv = k & ~63;
  const __mmask64 tail = (k - kv) == 0 ? 0 : (~std::uint64_t{0} >> (64 - (k - kv)));
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const std::int8_t* wr[4];
    for (int q = 0; q < 4; ++q) wr[q] = w + static_cast<std::size_t>(j + q) * ldw;
    for (int i = 0; i < m; ++i) {
      const std::int8_t* ar = a + static_cast<std::size_t>(i) * lda;
      __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
      for (int p = 0; p <= kv; p += 64) {
        if (p == kv && tail == 0) break;
        const __mmask64 mask = p < kv ? ~__mmask64{0} : tail;
        const __m512i av = _mm512_maskz_loadu_epi8(mask, ar + p);
        const __m512i ua = _mm512_abs_epi8(av);
        const __mmask64 neg = _mm512_movepi8_mask(av);
        c0 = dot_step(c0, ua, neg, _mm512_maskz_loadu_epi8(mask, wr[0] + p));
        c1 = dot_step(c1, ua, neg, _mm512_maskz_loadu_epi8(mask, wr[1] + p));
        c2 = dot_step(c2, ua, neg, _mm512_maskz_loadu_epi8(mask, wr[2] + p));
        c3 = dot_step(c3, ua, neg, _mm512_maskz_loadu_epi8(mask, wr[3] + p));
      }
      ep(i, j + 0, hsum(c0));
      ep(i, j + 1, hsum(c1));
      ep(i, j + 2, hsum(c2));
      ep(i, j + 3, hsum(c3));
    }
  }
  for (; j < n; ++j) {
    const std::int8_t* wr = w + static_cast<std::size_t>(j) * ldw;
    for (int i = 0; i < m; ++i) {
      const std::int8_t* ar = a + static_cast<std::size_t>(i) * lda;
      __m512i c = _mm512_setzero_si512();
      for (int p = 0; p <= kv; p += 64) {
        if (p == kv && tail == 0) break;
        const __mmask64 mask = p < kv ? ~__mmask64{0} : tail;
        const __m512i av = _mm512_maskz_loadu_epi8(mask, ar + p);
        c = dot_step(c, _mm512_abs_epi8(av), _mm512_movepi8_mask(av), _mm512_maskz_loadu_epi8(mask, wr + p));
      }
      ep(i, j, hsum(c));
    }
  }
}

// y[i] += b[i]; 16 floats per step, masked tail.
TASKMOE_TARGET_AVX512 inline void add_inplace(float* y, const float* b, int n) {
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_loadu_ps(b + i)));
  }
  if (i < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y + i), _mm512_maskz_loadu_ps(mask, b + i)));
  }
}

#undef TASKMOE_TARGET_AVX512
#undef TASKMOE_TARGET_AVX512_VNNI

}  // namespace avx512
}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe

#endif  // TASKMOE_KERNELS_X86
