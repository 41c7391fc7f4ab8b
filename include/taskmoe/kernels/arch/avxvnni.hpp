#pragma once
// AVX-VNNI kernels: the VEX-encoded 256-bit vpdpbusd of CPUs with AVX2 and AVX-VNNI but no
// AVX-512 VNNI (Intel Alder Lake and later client cores, Sierra Forest; AMD Zen 5 has both and
// takes the AVX-512 kernel). Used for the packed int8 GEMM when active_isa() == isa::avx2 and
// detect_cpu_features().avxvnni; everything else at that ISA stays in arch/avx2.hpp. Same rules:
// every function carries its target attribute.
//
// One vpdpbusd multiplies 4 broadcast activation bytes, shifted to unsigned (a + 128, as for the
// AVX-512 VNNI kernel), by 8 columns x 4 k of weights and adds the four products of each column
// straight into int32: 32 multiply-adds in one instruction where the AVX2 sign trick needs four,
// with no intermediate saturation. comp[j] = 128 * sum_k w[j, k] takes the shift back out in the
// shared epilogue (avx2::packed_epilogue), so results are bit-identical to every other kernel.

#include <cstddef>  // std::size_t
#include <cstdint>  // int8_t, uint8_t, int32_t
#include <cstring>  // std::memcpy

#include <taskmoe/kernels/arch/avx2.hpp>           // packed_epilogue
#include <taskmoe/kernels/detail/packed_args.hpp>  // packed_call, panel layout
#include <taskmoe/kernels/isa.hpp>                 // TASKMOE_KERNELS_X86

#if TASKMOE_KERNELS_X86
#include <immintrin.h>  // AVX-VNNI intrinsics (usable inside target("avxvnni") functions)

namespace taskmoe {
namespace kernels {
namespace detail {
namespace avxvnni {

#define TASKMOE_TARGET_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))

// MR rows x NP panels: 2 * MR * NP accumulators plus 2 * NP weight vectors of the 16 registers.
template <int MR, int NP>
TASKMOE_TARGET_AVXVNNI void packed_tile(const packed_call& g, int i0, int p0, next_block_prefetch next = {}) {
  __m256i acc[MR][NP][2];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NP; ++r) acc[i][r][0] = acc[i][r][1] = _mm256_setzero_si256();
  const std::size_t pb = g.panel_bytes();
  const std::int8_t* b = g.data + static_cast<std::size_t>(p0) * pb;
  const std::uint8_t* a = g.a + static_cast<std::size_t>(i0) * g.lda;
  for (int kk = 0; kk < g.k4;) {
    for (const int stop = next.until(kk, g.k4); kk < stop; kk += k_group) {
      __m256i w[NP][2];
      for (int r = 0; r < NP; ++r) {
        const std::int8_t* src = b + r * pb + static_cast<std::size_t>(kk) * panel_width;
        w[r][0] = _mm256_load_si256(reinterpret_cast<const __m256i*>(src));
        w[r][1] = _mm256_load_si256(reinterpret_cast<const __m256i*>(src + 32));
      }
      for (int i = 0; i < MR; ++i) {
        std::int32_t word;
        std::memcpy(&word, a + static_cast<std::size_t>(i) * g.lda + kk, sizeof word);
        const __m256i av = _mm256_set1_epi32(word);
        for (int r = 0; r < NP; ++r)
          for (int h = 0; h < 2; ++h) acc[i][r][h] = _mm256_dpbusd_avx_epi32(acc[i][r][h], av, w[r][h]);
      }
    }
    next.burst();
  }
  avx2::packed_epilogue<MR, NP>(g, i0, p0, acc, g.comp + static_cast<std::size_t>(p0) * panel_width);
}

// Panels [p0, p1), as avx2::gemm_packed: one panel at a time for every row in tiles of 6 (12
// accumulators) that prefetch the next panel; a single row takes 2 panels per tile.
TASKMOE_TARGET_AVXVNNI inline void gemm_packed(const packed_call& g, int p0, int p1) {
  if (g.m == 1) {
    int p = p0;
    for (; p + 2 <= p1; p += 2) packed_tile<1, 2>(g, 0, p);
    if (p < p1) packed_tile<1, 1>(g, 0, p);
    return;
  }
  const std::size_t pb = g.panel_bytes();
  const int tiles = (g.m + 5) / 6;
  for (int p = p0; p < p1; ++p) {
    // Each tile prefetches its share of the next panel, where there are two tiles or more (as
    // in avx512::gemm_packed).
    const block_prefetch_plan plan(g.data + static_cast<std::size_t>(p + 1) * pb, tiles > 1 && p + 1 < p1 ? pb : 0,
                                   g.k4, k_group, tiles);
    int i = 0, t = 0;
    for (; i + 6 <= g.m; i += 6, ++t) packed_tile<6, 1>(g, i, p, plan.share(t));
    const next_block_prefetch last = plan.share(t);
    switch (g.m - i) {
      case 5: packed_tile<5, 1>(g, i, p, last); break;
      case 4: packed_tile<4, 1>(g, i, p, last); break;
      case 3: packed_tile<3, 1>(g, i, p, last); break;
      case 2: packed_tile<2, 1>(g, i, p, last); break;
      case 1: packed_tile<1, 1>(g, i, p, last); break;
      default: break;
    }
  }
}

#undef TASKMOE_TARGET_AVXVNNI

}  // namespace avxvnni
}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe

#endif  // TASKMOE_KERNELS_X86
