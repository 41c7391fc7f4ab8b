#pragma once
// AVX-512 kernels (F + BW + VL; VNNI when the CPU has it). Same rules as arch/avx2.hpp: every
// function carries a target attribute and runs only when active_isa() == isa::avx512.
//
// int8: AVX-512BW has no vpsignb, so the sign of b moves onto a with a mask instead:
//     u = |b| (vpabsb),  neg = b < 0 (vpmovb2m),  s = neg ? -a : a (masked vpsubb)
// and vpdpbusd(acc, u, s) (VNNI) adds the four u8*s8 products of each dword straight into int32
// without intermediate saturation. K tails use masked loads, no scalar loop.

#include <algorithm>  // std::max
#include <cmath>    // std::log
#include <cstddef>  // std::size_t
#include <cstdint>  // int8_t, int32_t, uint64_t

#include <cstring>  // std::memcpy
#include <limits>   // std::numeric_limits
#include <type_traits>  // std::is_same

#include <taskmoe/kernels/arch/avx2.hpp>             // hsum8
#include <taskmoe/kernels/detail/exp_poly.hpp>     // log_softmax's exp
#include <taskmoe/kernels/detail/packed_args.hpp>  // packed_call, panel layout
#include <taskmoe/kernels/isa.hpp>                 // TASKMOE_KERNELS_X86

#if TASKMOE_KERNELS_X86
#include <immintrin.h>  // AVX-512 intrinsics (usable inside target(...) functions)

namespace taskmoe {
namespace kernels {
namespace detail {
namespace avx512 {

#define TASKMOE_TARGET_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define TASKMOE_TARGET_AVX512_VNNI \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

// acc += a * b for 64 signed bytes (a from our quantizer, b any int8): |b| is the unsigned
// operand and a takes b's sign, so b = -128 stays exact (negating b would wrap it to itself).
TASKMOE_TARGET_AVX512_VNNI inline __m512i dot_step(__m512i acc, __m512i a, __m512i b) {
  const __mmask64 neg = _mm512_movepi8_mask(b);
  return _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(b), _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a));
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
        c0 = dot_step(c0, av, _mm512_maskz_loadu_epi8(mask, wr[0] + p));
        c1 = dot_step(c1, av, _mm512_maskz_loadu_epi8(mask, wr[1] + p));
        c2 = dot_step(c2, av, _mm512_maskz_loadu_epi8(mask, wr[2] + p));
        c3 = dot_step(c3, av, _mm512_maskz_loadu_epi8(mask, wr[3] + p));
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
        c = dot_step(c, av, _mm512_maskz_loadu_epi8(mask, wr + p));
      }
      ep(i, j, hsum(c));
    }
  }
}

// The first `left` of 16 lanes (all 16 when left >= 16; left > 0).
TASKMOE_TARGET_AVX512 inline __mmask16 tail_mask(int left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
}

// generic::quantize_row_int8 at 16 floats per step, bit-exact like avx2::quantize_row_int8 (the
// same float ops per element, cvtps rounding half to even; the tail through masks). Returns false
// (q, scale untouched) on a non-finite value; the caller throws. Zero-masked forms with a full
// mask throughout (see hsum above).
TASKMOE_TARGET_AVX512 inline bool quantize_row_int8(const float* x, int n, std::int8_t* q, float* scale) {
  const __mmask16 all = 0xffff;
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  __m512 vmax = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int i = 0; i < n; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
    const __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask));
    bad = static_cast<__mmask16>(bad | _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ));  // inf or NaN
    vmax = _mm512_maskz_max_ps(all, vmax, a);
  }
  if (bad != 0) return false;
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, vmax);
  float amax = 0.0f;
  for (float v : lanes) amax = v > amax ? v : amax;
  const float inv = 127.0f / amax;
  if (!(inv < __builtin_inff())) {  // all zero, or max|x| < 127 / FLT_MAX: as generic
    for (int t = 0; t < n; ++t) q[t] = 0;
    *scale = 0.0f;
    return true;
  }
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  for (int t = 0; t < n; t += 16) {
    const __mmask16 m = tail_mask(n - t);
    const __m512i v = _mm512_maskz_cvtps_epi32(all, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + t), vinv));
    _mm512_mask_cvtepi32_storeu_epi8(q + t, m, _mm512_maskz_min_epi32(all, hi, _mm512_maskz_max_epi32(all, lo, v)));
  }
  *scale = amax / 127.0f;
  return true;
}

// ---- packed int8 GEMM (detail/packed_args.hpp) ------------------------------------------------
// Activations arrive shifted to unsigned (a + 128), so one vpdpbusd multiplies 4 activation bytes
// (broadcast) by 16 columns x 4 k of weights: 64 MACs, no sign fix-up, no horizontal sums. A tile
// is MR rows x NP panels of accumulators (at most 4 x 4 = 16 of the 32 registers, plus NP weight
// vectors); weights of the NP panels are loaded once per k-group for all MR rows.

// The epilogue of 16 columns [j, j + 16) (shared with arch/amx.hpp): what every row needs of them,
// loaded once per tile.
struct packed_columns {
  int j;
  __mmask16 mask;  // real columns (the last panel may be partial)
  __m512i comp;
  __m512 ws, bias;
  TASKMOE_TARGET_AVX512 packed_columns(const packed_call& g, int j0)
      : j(j0),
        mask(tail_mask(g.n - j0)),
        comp(_mm512_loadu_si512(g.comp + j0)),
        ws(_mm512_loadu_ps(g.w_scales + j0)),
        bias(g.bias != nullptr ? _mm512_loadu_ps(g.bias + j0) : _mm512_setzero_ps()) {}
};

// Row i of those columns from its int32 sums: (sum - comp) * a_scale * w_scale (+ bias), ReLU,
// accumulate. Zero-masked forms with a full mask: the unmasked intrinsics go through
// _mm512_undefined_ps(), which GCC 12 reports as maybe-uninitialized (see hsum above).
TASKMOE_TARGET_AVX512 inline void store_packed_row(const packed_call& g, const packed_columns& cols, int i,
                                                   __m512i acc) {
  const __mmask16 all = 0xffff;
  const __m512 zero = _mm512_setzero_ps();
  __m512 v = _mm512_maskz_cvtepi32_ps(all, _mm512_sub_epi32(acc, cols.comp));
  const __m512 sc = _mm512_mul_ps(_mm512_set1_ps(g.a_scales[i]), cols.ws);
  v = g.bias != nullptr ? _mm512_fmadd_ps(v, sc, cols.bias) : _mm512_mul_ps(v, sc);
  if (g.relu) v = _mm512_maskz_max_ps(all, v, zero);
  float* out = g.c + static_cast<std::size_t>(i) * g.ldc + cols.j;
  if (g.accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(cols.mask, out), v);
  _mm512_mask_storeu_ps(out, cols.mask, v);
}

template <int MR, int NP>
TASKMOE_TARGET_AVX512_VNNI void packed_tile(const packed_call& g, int i0, int p0, next_block_prefetch next = {}) {
  __m512i acc[MR][NP];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NP; ++r) acc[i][r] = _mm512_setzero_si512();
  const std::size_t pb = g.panel_bytes();
  const std::int8_t* b = g.data + static_cast<std::size_t>(p0) * pb;
  const std::uint8_t* a = g.a + static_cast<std::size_t>(i0) * g.lda;
  for (int kk = 0; kk < g.k4;) {
    for (const int stop = next.until(kk, g.k4); kk < stop; kk += k_group) {
      __m512i w[NP];
      for (int r = 0; r < NP; ++r)
        w[r] = _mm512_load_si512(reinterpret_cast<const void*>(b + r * pb + static_cast<std::size_t>(kk) * panel_width));
      for (int i = 0; i < MR; ++i) {
        std::int32_t word;
        std::memcpy(&word, a + static_cast<std::size_t>(i) * g.lda + kk, sizeof word);
        const __m512i av = _mm512_set1_epi32(word);
        for (int r = 0; r < NP; ++r) acc[i][r] = _mm512_dpbusd_epi32(acc[i][r], av, w[r]);
      }
    }
    next.burst();
  }
  for (int r = 0; r < NP; ++r) {
    const packed_columns cols(g, (p0 + r) * panel_width);
    for (int i = 0; i < MR; ++i) store_packed_row(g, cols, i0 + i, acc[i][r]);
  }
}

template <int MR>
TASKMOE_TARGET_AVX512_VNNI void packed_rows(const packed_call& g, int i0, int p, int np, next_block_prefetch next) {
  switch (np) {
    case 1: packed_tile<MR, 1>(g, i0, p, next); return;
    case 2: packed_tile<MR, 2>(g, i0, p, next); return;
    case 3: packed_tile<MR, 3>(g, i0, p, next); return;
    default: packed_tile<MR, 4>(g, i0, p, next); return;
  }
}

// Panels [p0, p1): blocks of 4 panels (64 columns, 64 * k4 bytes: in L2 for k4 <= 8192), and for
// each block every row in tiles of 4 that prefetch the next block. One row (greedy batch 1)
// takes 8 panels per tile for more loads in flight on the memory-bound weight stream.
TASKMOE_TARGET_AVX512_VNNI inline void gemm_packed(const packed_call& g, int p0, int p1) {
  if (g.m == 1) {
    int p = p0;
    for (; p + 8 <= p1; p += 8) packed_tile<1, 8>(g, 0, p);
    for (; p < p1; p += 4) packed_rows<1>(g, 0, p, p1 - p < 4 ? p1 - p : 4, {});
    return;
  }
  const std::size_t pb = g.panel_bytes();
  const int tiles = (g.m + 3) / 4;
  for (int p = p0; p < p1; p += 4) {
    const int np = p1 - p < 4 ? p1 - p : 4;
    const int next_np = p1 - p - np < 4 ? p1 - p - np : 4;
    const std::int8_t* next = g.data + static_cast<std::size_t>(p + np) * pb;
    // One tile (up to 4 rows) already streams int8 weights at the memory's pace: there the
    // prefetches only compete with the loads (5-8 % slower, measured).
    const block_prefetch_plan plan(next, tiles > 1 ? static_cast<std::size_t>(next_np) * pb : 0, g.k4, k_group, tiles);
    int i = 0, t = 0;
    for (; i + 4 <= g.m; i += 4, ++t) packed_rows<4>(g, i, p, np, plan.share(t));
    const next_block_prefetch last = plan.share(t);
    switch (g.m - i) {
      case 3: packed_rows<3>(g, i, p, np, last); break;
      case 2: packed_rows<2>(g, i, p, np, last); break;
      case 1: packed_rows<1>(g, i, p, np, last); break;
      default: break;
    }
  }
}

// ---- packed f32 GEMM (detail/packed_args.hpp) -------------------------------------------------
// One zmm per panel and k: a tile of MR rows x NP panels keeps MR * NP accumulators; each k loads
// NP weight vectors once for all MR rows. Same operations per lane as generic::gemm_packed_f32.

template <int MR, int NP>
TASKMOE_TARGET_AVX512 void packed_f32_tile(const packed_f32_call& g, int i0, int p0, next_block_prefetch next = {}) {
  __m512 acc[MR][NP];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NP; ++r) acc[i][r] = _mm512_setzero_ps();
  const std::size_t pf = g.panel_floats();
  const float* b = g.data + static_cast<std::size_t>(p0) * pf;
  const float* a = g.a + static_cast<std::size_t>(i0) * g.lda;
  const std::size_t lda = static_cast<std::size_t>(g.lda);
  const int k = g.k;  // locals: GCC otherwise reloads g.k and may spill acc on every k
  for (int kk = 0; kk < k;) {
    for (const int stop = next.until(kk, k); kk < stop; ++kk) {
      __m512 w[NP];
      for (int r = 0; r < NP; ++r) w[r] = _mm512_load_ps(b + r * pf + static_cast<std::size_t>(kk) * panel_width);
      for (int i = 0; i < MR; ++i) {
        const __m512 av = _mm512_set1_ps(a[static_cast<std::size_t>(i) * lda + kk]);
        for (int r = 0; r < NP; ++r) acc[i][r] = _mm512_fmadd_ps(av, w[r], acc[i][r]);
      }
    }
    next.burst();
  }
  // Epilogue loops fully unrolled and without early exits (an empty mask stores nothing): GCC
  // otherwise indexes acc in memory and keeps it on the stack, stored on every k.
  const __mmask16 all = 0xffff;
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int r = 0; r < NP; ++r) {
    const int j = (p0 + r) * panel_width;
    const __mmask16 mask = j < g.n ? tail_mask(g.n - j) : static_cast<__mmask16>(0);
    const __m512 bias = g.bias != nullptr ? _mm512_loadu_ps(g.bias + j) : zero;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m512 v = acc[i][r];
      if (g.bias != nullptr) v = _mm512_add_ps(v, bias);
      if (g.relu) v = _mm512_maskz_max_ps(all, v, zero);
      float* out = g.c + static_cast<std::size_t>(i0 + i) * g.ldc + j;
      if (g.accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), v);
      _mm512_mask_storeu_ps(out, mask, v);
    }
  }
}

template <int MR>
TASKMOE_TARGET_AVX512 void packed_f32_rows(const packed_f32_call& g, int i0, int p, int np, next_block_prefetch next) {
  switch (np) {
    case 1: packed_f32_tile<MR, 1>(g, i0, p, next); return;
    case 2: packed_f32_tile<MR, 2>(g, i0, p, next); return;
    case 3: packed_f32_tile<MR, 3>(g, i0, p, next); return;
    default: packed_f32_tile<MR, 4>(g, i0, p, next); return;
  }
}

// Blocks of 4 panels (64 columns: 256 * k bytes, in L2 for k <= 4096), every row in tiles of 6
// (24 accumulators) that prefetch the next block; a single row streams 8 panels at once to keep
// more loads in flight (prefetching there measured slower: stop 31).
TASKMOE_TARGET_AVX512 inline void gemm_packed_f32(const packed_f32_call& g, int p0, int p1) {
  if (g.m == 1) {
    int p = p0;
    for (; p + 8 <= p1; p += 8) packed_f32_tile<1, 8>(g, 0, p);
    for (; p < p1; p += 4) packed_f32_rows<1>(g, 0, p, p1 - p < 4 ? p1 - p : 4, {});
    return;
  }
  const std::size_t pf = g.panel_floats();
  const int tiles = (g.m + 5) / 6;
  for (int p = p0; p < p1; p += 4) {
    const int np = p1 - p < 4 ? p1 - p : 4;
    const int next_np = p1 - p - np < 4 ? p1 - p - np : 4;
    const float* next = g.data + static_cast<std::size_t>(p + np) * pf;
    const block_prefetch_plan plan(next, static_cast<std::size_t>(next_np) * pf * sizeof(float), g.k, 1, tiles);
    int i = 0, t = 0;
    for (; i + 6 <= g.m; i += 6, ++t) packed_f32_rows<6>(g, i, p, np, plan.share(t));
    const next_block_prefetch last = plan.share(t);
    switch (g.m - i) {
      case 5: packed_f32_rows<5>(g, i, p, np, last); break;
      case 4: packed_f32_rows<4>(g, i, p, np, last); break;
      case 3: packed_f32_rows<3>(g, i, p, np, last); break;
      case 2: packed_f32_rows<2>(g, i, p, np, last); break;
      case 1: packed_f32_rows<1>(g, i, p, np, last); break;
      default: break;
    }
  }
}

// ---- attention helpers (layers/attention.hpp; same contracts as the AVX2 versions) ------------

// Horizontal float sum, with zero-masked extracts (see hsum above for why not the plain ones).
TASKMOE_TARGET_AVX512 inline float hsum_ps(__m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  const __m256 h = _mm256_add_ps(_mm256_castsi256_ps(_mm512_maskz_extracti64x4_epi64(0xff, b, 0)),
                                 _mm256_castsi256_ps(_mm512_maskz_extracti64x4_epi64(0xff, b, 1)));
  __m128 t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  t = _mm_add_ps(t, _mm_movehl_ps(t, t));
  t = _mm_add_ss(t, _mm_movehdup_ps(t));
  return _mm_cvtss_f32(t);
}

// Per-lane partial sums of q_h . k_j over dh (chunks of 16, the last masked); q_h's first
// chunks come from registers.
constexpr int attention_q_chunks = 8;  // q_h in registers for dh <= 128
TASKMOE_TARGET_AVX512 inline __m512 dot_lanes(const __m512* qv, const float* qh, const float* kj, int dh) {
  __m512 acc = _mm512_setzero_ps();
  for (int c = 0; 16 * c < dh; ++c) {
    const __mmask16 m = tail_mask(dh - 16 * c);
    const __m512 qc = c < attention_q_chunks ? qv[c] : _mm512_maskz_loadu_ps(m, qh + 16 * c);
    acc = _mm512_fmadd_ps(qc, _mm512_maskz_loadu_ps(m, kj + 16 * c), acc);
  }
  return acc;
}

// Head-major forms, for dh not a multiple of 16 (the key-major ones below need whole registers
// per head). Two keys per step for independent FMA chains.
TASKMOE_TARGET_AVX512 inline void attention_scores_by_head(const float* q, const float* k, int ldk, const int* rows,
                                                   int n, int heads, int dh, float scale, float* s, int lds) {
  for (int h = 0; h < heads; ++h) {
    const float* qh = q + static_cast<std::size_t>(h) * dh;
    float* sh = s + static_cast<std::size_t>(h) * lds;
    __m512 qv[attention_q_chunks];
    for (int c = 0; c < attention_q_chunks; ++c)
      qv[c] = 16 * c < dh ? _mm512_maskz_loadu_ps(tail_mask(dh - 16 * c), qh + 16 * c) : _mm512_setzero_ps();
    const float* kh = k + static_cast<std::size_t>(h) * dh;
    int j = 0;
    for (; j + 2 <= n; j += 2) {
      const __m512 a0 = dot_lanes(qv, qh, kh + key_row(rows, j) * ldk, dh);
      const __m512 a1 = dot_lanes(qv, qh, kh + key_row(rows, j + 1) * ldk, dh);
      sh[j] = hsum_ps(a0) / scale;
      sh[j + 1] = hsum_ps(a1) / scale;
    }
    if (j < n) sh[j] = hsum_ps(dot_lanes(qv, qh, kh + key_row(rows, j) * ldk, dh)) / scale;
  }
}

// 64 columns (4 registers) per pass over the keys, masked tails.
TASKMOE_TARGET_AVX512 inline void attention_combine_by_head(const float* p, int lds, const float* v, int ldv,
                                                    const int* rows, int n, int heads, int dh, float* out) {
  for (int h = 0; h < heads; ++h) {
    const float* ph = p + static_cast<std::size_t>(h) * lds;
    float* oh = out + static_cast<std::size_t>(h) * dh;
    const float* vh = v + static_cast<std::size_t>(h) * dh;
    for (int c = 0; c < dh; c += 64) {
      const __mmask16 m0 = tail_mask(dh - c), m1 = dh - c > 16 ? tail_mask(dh - c - 16) : 0,
                      m2 = dh - c > 32 ? tail_mask(dh - c - 32) : 0, m3 = dh - c > 48 ? tail_mask(dh - c - 48) : 0;
      __m512 o0 = _mm512_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
      for (int j = 0; j < n; ++j) {
        const __m512 w = _mm512_set1_ps(ph[j]);
        const float* vj = vh + key_row(rows, j) * ldv + c;
        o0 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m0, vj), o0);
        o1 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m1, vj + 16), o1);
        o2 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m2, vj + 32), o2);
        o3 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m3, vj + 48), o3);
      }
      _mm512_mask_storeu_ps(oh + c, m0, o0);
      _mm512_mask_storeu_ps(oh + c + 16, m1, o1);
      _mm512_mask_storeu_ps(oh + c + 32, m2, o2);
      _mm512_mask_storeu_ps(oh + c + 48, m3, o3);
    }
  }
}

// 16 keys / values as floats: float32 as stored, float16 (the K/V cache's half form) converted.
TASKMOE_TARGET_AVX512 inline __m512 load_kv(const float* p) { return _mm512_loadu_ps(p); }
TASKMOE_TARGET_AVX512 inline __m512 load_kv(const std::uint16_t* p) {
  // The zero-masked forms here and in to_float16: GCC 12's unmasked ones read an undefined
  // vector, which -Wmaybe-uninitialized flags once inlined (as for hsum).
  return _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// s[h * lds + j] = (q_h . k_j,h) / scale, key-major (why: avx2::attention_scores): per key, eight
// heads' dot products, each folded to 8 lanes and reduced together. T: float, or float16 bits
// (dh a multiple of 16 then: the dispatcher sends other float16 shapes to the generic kernel).
template <class T>
TASKMOE_TARGET_AVX512 inline void attention_scores(const float* q, const T* k, int ldk, const int* rows,
                                                   int n, int heads, int dh, float scale, float* s, int lds) {
  if constexpr (std::is_same<T, float>::value)
    if (dh % 16 != 0) return attention_scores_by_head(q, k, ldk, rows, n, heads, dh, scale, s, lds);
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int j = 0; j < n; ++j) {
    const T* kj = k + key_row(rows, j) * ldk;
    for (int h0 = 0; h0 < heads; h0 += 8) {
      const int hn = heads - h0 < 8 ? heads - h0 : 8;
      __m256 part[8];
      for (int u = 0; u < 8; ++u) {
        part[u] = _mm256_setzero_ps();
        if (u >= hn) continue;
        const std::size_t off = static_cast<std::size_t>(h0 + u) * dh;
        __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(q + off), load_kv(kj + off));
        for (int c = 16; c < dh; c += 16)
          acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + off + c), load_kv(kj + off + c), acc);
        const __m512i b = _mm512_castps_si512(acc);  // zero-masked extracts: see hsum
        part[u] = _mm256_add_ps(_mm256_castsi256_ps(_mm512_maskz_extracti64x4_epi64(0xff, b, 0)),
                                _mm256_castsi256_ps(_mm512_maskz_extracti64x4_epi64(0xff, b, 1)));
      }
      alignas(32) float sums[8];
      _mm256_store_ps(sums, _mm256_div_ps(avx2::hsum8(part), vscale));
      for (int u = 0; u < hn; ++u) s[static_cast<std::size_t>(h0 + u) * lds + j] = sums[u];
    }
  }
}

// out[h * dh + c] = sum_j p[h * lds + j] * v[r_j * ldv + h * dh + c], key-major: four keys' rows
// per sweep of the output (which stays in L1), each row one contiguous read.
template <class T>
TASKMOE_TARGET_AVX512 inline void attention_combine(const float* p, int lds, const T* v, int ldv,
                                                    const int* rows, int n, int heads, int dh, float* out) {
  if constexpr (std::is_same<T, float>::value)
    if (dh % 16 != 0) return attention_combine_by_head(p, lds, v, ldv, rows, n, heads, dh, out);
  const int vectors = heads * dh / 16;
  for (int u = 0; u < vectors; ++u) _mm512_storeu_ps(out + 16 * u, _mm512_setzero_ps());
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const T* v0 = v + key_row(rows, j) * ldv;
    const T* v1 = v + key_row(rows, j + 1) * ldv;
    const T* v2 = v + key_row(rows, j + 2) * ldv;
    const T* v3 = v + key_row(rows, j + 3) * ldv;
    for (int u = 0; u < vectors; ++u) {
      const float* ph = p + static_cast<std::size_t>(u * 16 / dh) * lds + j;
      __m512 o = _mm512_loadu_ps(out + 16 * u);
      o = _mm512_fmadd_ps(_mm512_set1_ps(ph[0]), load_kv(v0 + 16 * u), o);
      o = _mm512_fmadd_ps(_mm512_set1_ps(ph[1]), load_kv(v1 + 16 * u), o);
      o = _mm512_fmadd_ps(_mm512_set1_ps(ph[2]), load_kv(v2 + 16 * u), o);
      o = _mm512_fmadd_ps(_mm512_set1_ps(ph[3]), load_kv(v3 + 16 * u), o);
      _mm512_storeu_ps(out + 16 * u, o);
    }
  }
  for (; j < n; ++j) {
    const T* v0 = v + key_row(rows, j) * ldv;
    for (int u = 0; u < vectors; ++u) {
      const float w = p[static_cast<std::size_t>(u * 16 / dh) * lds + j];
      _mm512_storeu_ps(out + 16 * u, _mm512_fmadd_ps(_mm512_set1_ps(w), load_kv(v0 + 16 * u),
                                                      _mm512_loadu_ps(out + 16 * u)));
    }
  }
}

// y = x rounded to float16 (nearest even), 16 at a time, the tail masked.
TASKMOE_TARGET_AVX512 inline void to_float16(const float* x, int n, std::uint16_t* y) {
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m256i h = _mm512_maskz_cvtps_ph(0xffff, _mm512_maskz_loadu_ps(m, x + i),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(y + i, m, h);
  }
}

// y = x widened from float16 (exact), 16 at a time, the tail masked.
TASKMOE_TARGET_AVX512 inline void from_float16(const std::uint16_t* x, int n, float* y) {
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_maskz_cvtph_ps(0xffff, _mm256_maskz_loadu_epi16(m, x + i)));
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

// avx2::exp_nonpositive at 16 lanes (the same polynomial and clamp). The masked forms of max,
// roundscale, cvtps and slli take an explicit source: GCC 12's unmasked ones start from
// _mm512_undefined_*, which -Wuninitialized reports once inlined.
TASKMOE_TARGET_AVX512 inline __m512 exp_nonpositive(__m512 x) {
  constexpr __mmask16 all = 0xFFFF;
  const __m512i zero = _mm512_setzero_si512();
  x = _mm512_mask_max_ps(x, all, _mm512_set1_ps(exp_poly::min_x), x);
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(exp_poly::log2e));
  const __m512 n = _mm512_mask_roundscale_ps(t, all, t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(exp_poly::ln2_hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(exp_poly::ln2_lo), r);
  __m512 p = _mm512_set1_ps(exp_poly::coeffs[0]);
  for (int c = 1; c < 6; ++c) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_poly::coeffs[c]));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i biased = _mm512_add_epi32(_mm512_mask_cvtps_epi32(zero, all, n), _mm512_set1_epi32(127));
  return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_mask_slli_epi32(zero, all, biased, 23)));
}

// avx2::log_softmax_row at 16 lanes, masked tails.
TASKMOE_TARGET_AVX512 inline void log_softmax_row(const float* x, int n, float* y) {
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  constexpr __mmask16 all = 0xFFFF;
  const __m512 vinf = _mm512_set1_ps(neg_inf);
  const int full = n - n % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (n - full)) - 1u);
  alignas(64) float lanes[16];
  __m512 vm = _mm512_mask_loadu_ps(vinf, tail, x + full);
  for (int i = 0; i < full; i += 16) vm = _mm512_mask_max_ps(vm, all, vm, _mm512_loadu_ps(x + i));
  _mm512_store_ps(lanes, vm);
  float mx = neg_inf;
  for (const float l : lanes) mx = std::max(mx, l);
  if (mx == neg_inf) {
    for (int i = 0; i < n; ++i) y[i] = neg_inf;
    return;
  }
  const __m512 vmx = _mm512_set1_ps(mx);
  __m512 acc = _mm512_maskz_mov_ps(tail, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + full), vmx)));
  for (int i = 0; i < full; i += 16) acc = _mm512_add_ps(acc, exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmx)));
  _mm512_store_ps(lanes, acc);
  float sum = 0.0f;
  for (const float l : lanes) sum += l;
  const float shift = mx + std::log(sum);
  const __m512 vs = _mm512_set1_ps(shift);
  for (int i = 0; i < full; i += 16) _mm512_storeu_ps(y + i, _mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
  _mm512_mask_storeu_ps(y + full, tail, _mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + full), vs));
}

#undef TASKMOE_TARGET_AVX512
#undef TASKMOE_TARGET_AVX512_VNNI

}  // namespace avx512
}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe

#endif  // TASKMOE_KERNELS_X86
