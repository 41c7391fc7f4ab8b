#pragma once
// AVX2 int8 GEMM by Winograd's pair products (S. Winograd, "A new algorithm for inner product",
// IEEE Trans. Computers, 1968), for CPUs that run every vector integer multiply on one pipe (AMD
// Zen 1 / Zen+). There the sign-trick kernel (arch/avx2.hpp) is capped by its two
// multiplies per 32 products (vpmaddubsw + vpmaddwd); this one needs one vpmaddwd per 32 and
// moves the rest to adds, which three pipes issue:
//
//     sum_k a[k] w[k] = sum_t (a[2t] + w[2t+1]) (a[2t+1] + w[2t])  -  sum_t a[2t] a[2t+1]  -  sum_t w[2t] w[2t+1]
//
// The last two sums are one number per activation row and one per weight column: the epilogue's
// row_sub / col_sub. Operands are int16 (|a + w| <= 127 + 128), every product and pair sum fits
// int32, and the int32 wrap-around of the accumulators cancels in the subtraction, so the result
// is the exact integer dot product: bit-identical to every other kernel (shared epilogue).
//
// Data: the activations become int16 pairs once per call (expand_rows: per k-group words (a0, a2)
// and (a1, a3), and their row sums); each weight panel becomes int16 pairs (w1, w3), (w0, w2) in a
// per-thread scratch right before its tiles run (expand_panel), so the packed weights in memory
// stay the int8 panels every kernel shares, and the conversion is paid once per panel and call,
// shared by all its row tiles (hence only for calls with many rows: int8_pairs_min_rows).
// Zen 1, one core, M = 64: 1.08x-1.13x the AVX2 kernel on non-negative activations, 1.14x-1.18x
// on signed ones (the adds, three per vpmaddwd, are now the limit). Where two pipes multiply
// (Intel since Skylake) counting instructions predicts a loss (not measured: no such CPU here), so
// choose_packed_kernel() picks it only where cpu_features::one_multiply_pipe.

#include <cstddef>  // std::size_t
#include <cstdint>  // int8_t, int16_t, int32_t
#include <vector>   // std::vector

#include <taskmoe/kernels/arch/avx2.hpp>           // packed_epilogue
#include <taskmoe/kernels/detail/packed_args.hpp>  // packed_call, panel layout
#include <taskmoe/kernels/isa.hpp>                 // TASKMOE_KERNELS_X86

#if TASKMOE_KERNELS_X86
#include <immintrin.h>  // AVX2 intrinsics (usable inside target("avx2") functions)

namespace taskmoe {
namespace kernels {
namespace detail {
namespace avx2_pairs {

#define TASKMOE_TARGET_AVX2_PAIRS __attribute__((target("avx2,fma,f16c")))

// Rows q [m, k4] (lda) of signed activation bytes -> words [m, k4 / 2] (ldw): k-group t gives the
// int16 pairs (a0, a2) at word 2t and (a1, a3) at 2t + 1; sums[i] = sum_t a0 a1 + a2 a3 (exact:
// |sums| <= k4 * 127 * 127 / 2 fits int32 for k4 <= 65536).
TASKMOE_TARGET_AVX2_PAIRS inline void expand_rows(const std::int8_t* q, int m, int k4, int lda, std::int32_t* words,
                                                  int ldw, std::int32_t* sums) {
  const __m128i order = _mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15);
  const __m256i even_words = _mm256_setr_epi32(-1, 0, -1, 0, -1, 0, -1, 0);
  for (int i = 0; i < m; ++i) {
    const std::int8_t* a = q + static_cast<std::size_t>(i) * lda;
    auto* out = reinterpret_cast<std::int16_t*>(words + static_cast<std::size_t>(i) * ldw);
    __m256i acc = _mm256_setzero_si256();
    int t = 0;
    for (; t + 16 <= k4; t += 16) {  // 4 k-groups
      const __m128i bytes = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + t)), order);
      const __m256i v = _mm256_cvtepi8_epi16(bytes);  // a0 a2 a1 a3 per group
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + t), v);
      // word (a0, a2) . word (a1, a3) in the even dword of each group; the odd one repeats it.
      acc = _mm256_add_epi32(acc, _mm256_and_si256(_mm256_madd_epi16(v, _mm256_shuffle_epi32(v, 0xB1)), even_words));
    }
    std::int32_t sum = avx2::hsum(acc);
    for (; t < k4; t += 4) {
      out[t] = a[t];
      out[t + 1] = a[t + 2];
      out[t + 2] = a[t + 1];
      out[t + 3] = a[t + 3];
      sum += a[t] * a[t + 1] + a[t + 2] * a[t + 3];
    }
    sums[i] = sum;
  }
}

// One int8 panel (detail/packed_args.hpp) -> w16 [k4 / 4][2 halves][(w1, w3) x 8 columns,
// (w0, w2) x 8 columns] int16, and sums[c] = sum_t w0 w1 + w2 w3 of its 16 columns.
TASKMOE_TARGET_AVX2_PAIRS inline void expand_panel(const std::int8_t* panel, int k4, std::int16_t* w16,
                                                   std::int32_t* sums) {
  // Per 128-bit lane (4 columns x 4 k): the odd k of each column, then the even ones.
  const __m256i order = _mm256_setr_epi8(1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14,  //
                                         1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14);
  __m256i acc[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
  for (int t = 0; t < k4 / k_group; ++t)
    for (int h = 0; h < 2; ++h) {
      const __m256i bytes = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + t * 64 + h * 32));
      // [odd 0-3, even 0-3 | odd 4-7, even 4-7] -> [odd 0-7 | even 0-7]
      const __m256i split = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(bytes, order), 0xD8);
      const __m256i odd = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(split));
      const __m256i even = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(split, 1));
      std::int16_t* dst = w16 + t * 64 + h * 32;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), odd);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 16), even);
      acc[h] = _mm256_add_epi32(acc[h], _mm256_madd_epi16(odd, even));
    }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums), acc[0]);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums + 8), acc[1]);
}

// MR rows x one panel: 2 * MR accumulators, 4 weight vectors and 2 broadcasts.
template <int MR>
TASKMOE_TARGET_AVX2_PAIRS void tile(const packed_call& g, int i0, int p, const std::int16_t* w16,
                                    const std::int32_t* col_sums, next_block_prefetch next) {
  __m256i lo[MR], hi[MR];  // columns 0-7 / 8-15 (plain arrays: a nested one made GCC spill)
  for (int i = 0; i < MR; ++i) lo[i] = hi[i] = _mm256_setzero_si256();
  const std::int32_t* a = g.a_pairs + static_cast<std::size_t>(i0) * g.ld_pairs;
  const int groups = g.k4 / k_group;
  for (int t = 0; t < groups;) {
    for (const int stop = next.until(t, groups); t < stop; ++t) {
      const std::int16_t* src = w16 + t * 64;
      const __m256i odd0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
      const __m256i even0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 16));
      const __m256i odd1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
      const __m256i even1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 48));
      for (int i = 0; i < MR; ++i) {
        const std::int32_t* row = a + static_cast<std::size_t>(i) * g.ld_pairs + 2 * t;
        const __m256i a02 = _mm256_set1_epi32(row[0]), a13 = _mm256_set1_epi32(row[1]);
        // (a0 + w1)(a1 + w0) + (a2 + w3)(a3 + w2) per column
        lo[i] = _mm256_add_epi32(lo[i], _mm256_madd_epi16(_mm256_add_epi16(a02, odd0), _mm256_add_epi16(a13, even0)));
        hi[i] = _mm256_add_epi32(hi[i], _mm256_madd_epi16(_mm256_add_epi16(a02, odd1), _mm256_add_epi16(a13, even1)));
      }
    }
    next.burst();
  }
  __m256i acc[MR][1][2];
  for (int i = 0; i < MR; ++i) {
    acc[i][0][0] = lo[i];
    acc[i][0][1] = hi[i];
  }
  avx2::packed_epilogue<MR, 1>(g, i0, p, acc, col_sums, g.a_pair_sums + i0);
}

// Panels [p0, p1): each panel converted once into this thread's scratch, then every row in tiles
// of 2. Per-row work bounds this kernel (per row and k-group: 2 broadcasts, 8 vector ops), not
// weight loads: 4-row tiles spill two accumulators per k-group and ran 4-12 % slower on Zen 1
// (M = 16 / 64 / 256, K = 512 / 2048, one core). Needs g.a_pairs / g.a_pair_sums (expand_rows).
TASKMOE_TARGET_AVX2_PAIRS inline void gemm_packed(const packed_call& g, int p0, int p1) {
  thread_local std::vector<std::int16_t> scratch;
  scratch.resize(static_cast<std::size_t>(g.k4) * panel_width);
  std::int16_t* w16 = scratch.data();
  alignas(32) std::int32_t col_sums[panel_width];
  const int tiles = (g.m + 1) / 2;
  for (int p = p0; p < p1; ++p) {
    expand_panel(g.data + static_cast<std::size_t>(p) * g.panel_bytes(), g.k4, w16, col_sums);
    // The tiles prefetch the next packed panel (which expand_panel reads next), as the other
    // kernels do.
    const block_prefetch_plan plan(g.data + static_cast<std::size_t>(p + 1) * g.panel_bytes(),
                                   p + 1 < p1 ? g.panel_bytes() : 0, g.k4 / k_group, 1, tiles);
    int i = 0, t = 0;
    for (; i + 2 <= g.m; i += 2, ++t) tile<2>(g, i, p, w16, col_sums, plan.share(t));
    if (i < g.m) tile<1>(g, i, p, w16, col_sums, plan.share(t));
  }
}

#undef TASKMOE_TARGET_AVX2_PAIRS

}  // namespace avx2_pairs
}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe

#endif  // TASKMOE_KERNELS_X86
