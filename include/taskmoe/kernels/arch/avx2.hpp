#pragma once
// AVX2 (+FMA) kernels. Every function here carries __attribute__((target("avx2,fma,f16c"))), so this
// header compiles and links in a baseline x86-64 build; the dispatchers call these only when
// active_isa() >= isa::avx2. Kernels not defined here fall back to arch/generic.hpp.
//
// int8 scheme (the "sign trick"). AVX2 has no signed x signed byte multiply; vpmaddubsw multiplies
// unsigned bytes by signed bytes and adds adjacent pairs into int16 *with saturation*. For an
// activation a (from quantize_rows_int8: [-127, 127], never -128) and a weight w (any int8) we
// feed it
//     u = |w|            (vpabsb; read as unsigned, |-128| = 128 is exact)
//     s = sign(a, w)     (vpsignb: a, -a or 0 as w is >0, <0 or 0; never wraps since a != -128)
// so that u * s == a * w exactly, and each int16 pair sum is at most 2 * 128 * 127 = 32512 <
// 32767: it never saturates. vpmaddwd with ones then widens pairs to int32 and vpaddd accumulates.
// (The other way round, u = |a| and s = sign(w, a), wraps -w for w = -128.)
// Weights packed narrow (|w| <= 64, packed_int8's int8_weights::narrow) need no sign trick: a + 128
// is the unsigned operand as for VNNI, pair sums at most 2 * 255 * 64 (gemm_packed_narrow).

#include <algorithm>  // std::max, std::min, std::fill
#include <cmath>      // std::exp, std::log
#include <cstddef>    // std::size_t
#include <cstdint>    // int8_t, int32_t
#include <cstring>    // std::memcpy
#include <limits>     // std::numeric_limits
#include <type_traits>  // std::is_same
#include <vector>       // std::vector (pair_groups scratch)

#include <taskmoe/kernels/detail/exp_poly.hpp>     // log_softmax's exp
#include <taskmoe/kernels/detail/packed_args.hpp>  // packed_call, panel layout
#include <taskmoe/kernels/isa.hpp>                 // TASKMOE_KERNELS_X86

#if TASKMOE_KERNELS_X86
#include <immintrin.h>  // AVX2 intrinsics (usable inside target("avx2") functions)

namespace taskmoe {
namespace kernels {
namespace detail {
namespace avx2 {

// F16C: every AVX2 CPU has it, and cpu_supports(isa::avx2) checks it (the float16 K/V cache).
#define TASKMOE_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

// acc += a * b for 32 signed bytes (a from our quantizer, b any int8): the sign trick with |b| as
// the unsigned operand, so that b = -128 (|b| = 128 unsigned) stays exact; negating b instead
// would wrap -128 to itself.
TASKMOE_TARGET_AVX2 inline __m256i dot_step(__m256i acc, __m256i a, __m256i b) {
  const __m256i ones = _mm256_set1_epi16(1);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(b), _mm256_sign_epi8(a, b)), ones));
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
        __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + p));
        c0 = dot_step(c0, av, wv);
        d0 = dot_step(d0, bv, wv);
        wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + p));
        c1 = dot_step(c1, av, wv);
        d1 = dot_step(d1, bv, wv);
        wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w2 + p));
        c2 = dot_step(c2, av, wv);
        d2 = dot_step(d2, bv, wv);
        wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w3 + p));
        c3 = dot_step(c3, av, wv);
        d3 = dot_step(d3, bv, wv);
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
        c0 = dot_step(c0, av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + p)));
        c1 = dot_step(c1, av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + p)));
        c2 = dot_step(c2, av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w2 + p)));
        c3 = dot_step(c3, av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w3 + p)));
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
        c = dot_step(c, av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + p)));
      }
      ep(i, j, hsum(c) + dot_tail(ar, wr, kv, k));
    }
  }
}

// Stores v (+ out, when accumulating) to out's first `cols` floats (all 8 when cols >= 8). Plain
// loads and stores wherever the 8 columns are real: Zen 1 microcodes vmaskmovps to memory (tens
// of micro-ops per store), which cost the f32 tile 2-5 % at K = 512.
__attribute__((target("avx2,fma,f16c"), always_inline)) inline void store_columns(float* out, __m256 v, int cols,
                                                                                 __m256i mask, bool accumulate) {
  if (cols >= 8) {
    if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(out), v);
    _mm256_storeu_ps(out, v);
  } else {
    if (accumulate) v = _mm256_add_ps(_mm256_maskload_ps(out, mask), v);
    _mm256_maskstore_ps(out, mask, v);
  }
}

// ---- packed int8 GEMM (detail/packed_args.hpp) ------------------------------------------------
// The epilogue of a packed int8 tile (MR rows x NP panels, two 8-column halves each): the int32
// sums, less col_sub[c] (c counted from the tile's first column; null: none) and row_sub[i] (null:
// none), the corrections of the kernels that multiply something else than a * w (VNNI: a + 128;
// avx2_pairs: Winograd's pair products), become act(sum * a_scale * w_scale + bias) (+ c), stored
// to the real columns only. One explicit fused multiply-add like every ISA's epilogue, so all
// kernels give bit-identical results.
template <int MR, int NP>
__attribute__((target("avx2,fma,f16c"), always_inline)) inline void packed_epilogue(
    const packed_call& g, int i0, int p0, const __m256i (&acc)[MR][NP][2], const std::int32_t* col_sub = nullptr,
    const std::int32_t* row_sub = nullptr) {
  const __m256 zero = _mm256_setzero_ps();
  for (int r = 0; r < NP; ++r)
    for (int h = 0; h < 2; ++h) {
      const int j = (p0 + r) * panel_width + 8 * h;
      const int cols = g.n - j;
      if (cols <= 0) break;
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      const __m256i comp = col_sub != nullptr ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col_sub + r * panel_width + 8 * h))
                                              : _mm256_setzero_si256();
      const __m256 ws = _mm256_loadu_ps(g.w_scales + j);
      const __m256 bias = g.bias != nullptr ? _mm256_loadu_ps(g.bias + j) : zero;
      for (int i = 0; i < MR; ++i) {
        __m256i sum = _mm256_sub_epi32(acc[i][r][h], comp);
        if (row_sub != nullptr) sum = _mm256_sub_epi32(sum, _mm256_set1_epi32(row_sub[i]));
        __m256 v = _mm256_cvtepi32_ps(sum);
        const __m256 sc = _mm256_mul_ps(_mm256_set1_ps(g.a_scales[i0 + i]), ws);
        v = g.bias != nullptr ? _mm256_fmadd_ps(v, sc, bias) : _mm256_mul_ps(v, sc);
        if (g.relu) v = _mm256_max_ps(v, zero);
        store_columns(g.c + static_cast<std::size_t>(i0 + i) * g.ldc + j, v, cols, mask, g.accumulate);
      }
    }
}

// q[t] ^= 0x80: signed activation bytes to the unsigned a + 128 the VNNI kernels multiply (AVX2
// and AVX-512 VNNI alike; the pass is a sliver of the GEMM that follows).
TASKMOE_TARGET_AVX2 inline void flip_sign_bits(std::uint8_t* q, int n) {
  const __m256i bit = _mm256_set1_epi8(static_cast<char>(0x80));
  int t = 0;
  for (; t + 32 <= n; t += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + t));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + t), _mm256_xor_si256(v, bit));
  }
  for (; t < n; ++t) q[t] = static_cast<std::uint8_t>(q[t] ^ 0x80u);
}

// Signed activations and the sign trick (with the roles swapped, see below), on the panel layout: 4 activation bytes are
// broadcast, each 32-byte half of a panel row group is 8 columns x 4 k, and vpmaddubsw +
// vpmaddwd leave one int32 per column: every lane is an output, no horizontal sums.
// Nonnegative (g.a_nonnegative, a ReLU's output): the activations are the unsigned operand as
// they are, one vpsignb fewer per 32 products. Zen 1 runs every vector integer multiply on one
// pipe, so this is the only saving there: about 14 % in a 4 x 16 tile loop (19.1 vs 16.8 GMAC/s).
//
// The 16-bit products of one k-group for MR rows x NP panels: pairs[i][r][h] = the int16 pair
// sums of row i against panel r's half h (w points at the group in panel 0, panels pb bytes
// apart; a at the row tile's first activation byte of the group).
template <int MR, int NP, bool Nonnegative>
__attribute__((target("avx2,fma,f16c"), always_inline)) inline void group_pair_sums(
    const std::int8_t* w, std::size_t pb, const std::uint8_t* a, std::size_t lda, __m256i (&pairs)[MR][NP][2]) {
  // u = |w| (as unsigned bytes: |-128| = 128 is right) and s = a * sign(w) (a in [-127, 127]
  // never wraps), so u * s == a * w exactly, pair sums <= 2 * 128 * 127 < 32767: exact even
  // for -128 in a file's weights, which negating w (the other way round) would wrap.
  __m256i wv[NP][2];
  [[maybe_unused]] __m256i u[NP][2];  // |w|: the sign trick's unsigned operand
  for (int r = 0; r < NP; ++r)
    for (int h = 0; h < 2; ++h) {
      wv[r][h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + r * pb + 32 * h));
      if constexpr (!Nonnegative) u[r][h] = _mm256_abs_epi8(wv[r][h]);
    }
  for (int i = 0; i < MR; ++i) {
    std::int32_t word;
    std::memcpy(&word, a + static_cast<std::size_t>(i) * lda, sizeof word);
    const __m256i av = _mm256_set1_epi32(word);
    for (int r = 0; r < NP; ++r)
      for (int h = 0; h < 2; ++h)
        // a in [0, 127] as unsigned times any w: pair sums <= 2 * 127 * 128 < 32767.
        pairs[i][r][h] = Nonnegative ? _mm256_maddubs_epi16(av, wv[r][h])
                                     : _mm256_maddubs_epi16(u[r][h], _mm256_sign_epi8(av, wv[r][h]));
  }
}

// A tile of MR rows x NP panels (2 * MR * NP accumulators of the 16 registers) over the k-groups
// in order. col_sub: the epilogue's column corrections (comp, for activations shifted by +128).
template <int MR, int NP, bool Nonnegative>
TASKMOE_TARGET_AVX2 void packed_tile(const packed_call& g, int i0, int p0, next_block_prefetch next = {},
                                     const std::int32_t* col_sub = nullptr) {
  __m256i acc[MR][NP][2];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NP; ++r) acc[i][r][0] = acc[i][r][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  const std::size_t pb = g.panel_bytes();
  const std::int8_t* b = g.data + static_cast<std::size_t>(p0) * pb;
  const std::uint8_t* a = g.a + static_cast<std::size_t>(i0) * g.lda;
  for (int kk = 0; kk < g.k4;) {
    for (const int stop = next.until(kk, g.k4); kk < stop; kk += k_group) {
      __m256i pairs[MR][NP][2];
      group_pair_sums<MR, NP, Nonnegative>(b + static_cast<std::size_t>(kk) * panel_width, pb, a + kk, g.lda, pairs);
      for (int i = 0; i < MR; ++i)
        for (int r = 0; r < NP; ++r)
          for (int h = 0; h < 2; ++h) acc[i][r][h] = _mm256_add_epi32(acc[i][r][h], _mm256_madd_epi16(pairs[i][r][h], ones));
    }
    next.burst();
  }
  packed_epilogue<MR, NP>(g, i0, p0, acc, col_sub);
}

// Narrow weights (packed_int8 with int8_weights::narrow: |w| <= 64) and ReLU outputs (a in
// [0, 127]): one k-group's pair sums are at most 2 * 127 * 64, two groups' 32512, so two groups
// add in int16 (vpaddw, any port) before one vpmaddwd: 1.5 multiply-port operations per 32
// products instead of 2. (Signed activations on narrow weights go shifted through packed_tile:
// pair sums of a + 128 in [1, 255] are at most 2 * 255 * 64 = 32640, exact, but two groups'
// would not be.) next's stride is two groups; an odd last group runs alone.
template <int MR, int NP>
TASKMOE_TARGET_AVX2 void packed_tile_narrow_pairs(const packed_call& g, int i0, int p0, next_block_prefetch next = {}) {
  __m256i acc[MR][NP][2];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NP; ++r) acc[i][r][0] = acc[i][r][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  constexpr int block = panel_width * k_group;  // bytes per k-group in a panel
  const std::size_t pb = g.panel_bytes();
  const std::size_t lda = static_cast<std::size_t>(g.lda);
  const std::int8_t* b = g.data + static_cast<std::size_t>(p0) * pb;
  const std::uint8_t* a = g.a + static_cast<std::size_t>(i0) * lda;
  const int k4 = g.k4;
  for (int kk = 0; kk < k4;) {
    for (const int stop = next.until(kk, k4); kk < stop;) {
      if (kk + 2 * k_group > stop) {  // the last group, alone
        __m256i sums[MR][NP][2];
        group_pair_sums<MR, NP, true>(b + static_cast<std::size_t>(kk) * panel_width, pb, a + kk, lda, sums);
        for (int i = 0; i < MR; ++i)
          for (int r = 0; r < NP; ++r)
            for (int h = 0; h < 2; ++h) acc[i][r][h] = _mm256_add_epi32(acc[i][r][h], _mm256_madd_epi16(sums[i][r][h], ones));
        kk += k_group;
        continue;
      }
      const std::int8_t* w = b + static_cast<std::size_t>(kk) * panel_width;
      for (int i = 0; i < MR; ++i) {
        std::int32_t x0, x1;
        std::memcpy(&x0, a + i * lda + kk, sizeof x0);
        std::memcpy(&x1, a + i * lda + kk + k_group, sizeof x1);
        const __m256i a0 = _mm256_set1_epi32(x0), a1 = _mm256_set1_epi32(x1);
        // The weights as memory operands, read again for every row (as in packed_tile_paired:
        // in registers they leave too few for the accumulators).
        const std::int8_t* rw = w;
        asm("" : "+r"(rw));
        for (int r = 0; r < NP; ++r)
          for (int h = 0; h < 2; ++h) {
            const std::int8_t* v = rw + r * pb + 32 * h;
            const __m256i sum =
                _mm256_add_epi16(_mm256_maddubs_epi16(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(v))),
                                 _mm256_maddubs_epi16(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(v + block))));
            acc[i][r][h] = _mm256_add_epi32(acc[i][r][h], _mm256_madd_epi16(sum, ones));
          }
      }
      kk += 2 * k_group;
    }
    next.burst();
  }
  packed_epilogue<MR, NP>(g, i0, p0, acc);
}

// Signed activations over one panel in the order of its group schedule (packed_call::group_order,
// built at pack time by pair_groups below): first pairs of k-groups whose 16-bit pair sums add
// without overflow for any activations, so that one vpmaddwd + vpaddd widen two groups; then the
// groups left single. Per 32 products that is 1 vpsignb + 1 vpmaddubsw + 1/2 vpmaddwd on the
// vector-multiply ports instead of 1 + 1 + 1 (Intel's ports 0 and 1 run all three): 1.05x-1.18x
// on a decoder step's GEMMs at 4-64 rows, -1 % to +7 % end to end, Emerald Rapids limited to AVX2
// (docs/performance.md, stop 33).
// Non-negative activations were no faster paired (0.93x-0.99x) and keep packed_tile.
template <int MR>
TASKMOE_TARGET_AVX2 void packed_tile_paired(const packed_call& g, int i0, int p0, next_block_prefetch next) {
  __m256i acc[MR][1][2];
  for (int i = 0; i < MR; ++i) acc[i][0][0] = acc[i][0][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  constexpr int block = panel_width * k_group;  // bytes per k-group in a panel
  const std::size_t pb = g.panel_bytes();
  const int groups = g.k4 / k_group;
  const std::int8_t* b = g.data + static_cast<std::size_t>(p0) * pb;
  const std::uint16_t* order = g.group_order + static_cast<std::size_t>(p0) * groups;
  const int pairs = g.paired_groups[p0] / 2;
  const std::uint8_t* a = g.a + static_cast<std::size_t>(i0) * g.lda;
  const std::size_t lda = static_cast<std::size_t>(g.lda);
  // The next block's prefetch takes one line per step here, the rest at the end: packed_tile's
  // chunked loop (a few groups between bursts) cost this loop more than the prefetch saved.
  for (int q = 0; q < pairs; ++q) {
    next.one_line();
    const int g0 = order[2 * q], g1 = order[2 * q + 1];
    const std::int8_t* w0 = b + g0 * block;
    const std::int8_t* w1 = b + g1 * block;
    __m256i u0[2], u1[2];  // |w|, the sign trick's unsigned operands
    for (int h = 0; h < 2; ++h) {
      u0[h] = _mm256_abs_epi8(_mm256_load_si256(reinterpret_cast<const __m256i*>(w0 + 32 * h)));
      u1[h] = _mm256_abs_epi8(_mm256_load_si256(reinterpret_cast<const __m256i*>(w1 + 32 * h)));
    }
    for (int i = 0; i < MR; ++i) {
      std::int32_t x0, x1;
      std::memcpy(&x0, a + g0 * k_group + i * lda, sizeof x0);
      std::memcpy(&x1, a + g1 * k_group + i * lda, sizeof x1);
      const __m256i a0 = _mm256_set1_epi32(x0), a1 = _mm256_set1_epi32(x1);
      // The weights again from L1 for every row (memory operands): kept in registers they left
      // too few for the accumulators, which then went through the stack.
      const std::int8_t* r0 = w0;
      const std::int8_t* r1 = w1;
      asm("" : "+r"(r0), "+r"(r1));
      for (int h = 0; h < 2; ++h) {
        const __m256i s0 = _mm256_sign_epi8(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(r0 + 32 * h)));
        const __m256i s1 = _mm256_sign_epi8(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(r1 + 32 * h)));
        // Each vpmaddubsw lane is exact (group_pair_sums); their sum is within 127 * 258.
        const __m256i sum = _mm256_add_epi16(_mm256_maddubs_epi16(u0[h], s0), _mm256_maddubs_epi16(u1[h], s1));
        acc[i][0][h] = _mm256_add_epi32(acc[i][0][h], _mm256_madd_epi16(sum, ones));
      }
    }
  }
  for (int q = 2 * pairs; q < groups; ++q) {
    next.one_line();
    const int g0 = order[q];
    __m256i sums[MR][1][2];
    group_pair_sums<MR, 1, false>(b + g0 * block, pb, a + g0 * k_group, g.lda, sums);
    for (int i = 0; i < MR; ++i)
      for (int h = 0; h < 2; ++h) acc[i][0][h] = _mm256_add_epi32(acc[i][0][h], _mm256_madd_epi16(sums[i][0][h], ones));
  }
  next.rest();
  packed_epilogue<MR, 1>(g, i0, p0, acc);
}

// What the activations and weights of a call are, for the AVX2 tiles: signed activations by the
// sign trick (any weights); ReLU outputs as unsigned bytes (any weights); narrow weights with
// signed activations shifted by +128 (gemm_packed_int8 shifts them) or with ReLU outputs, two
// k-groups per vpmaddwd.
enum class int8_operands { sign_trick, nonnegative, shifted_narrow, nonnegative_narrow };

// One tile of MR rows x NP panels of the given operands (the sign trick in the panel's group
// schedule where paired).
template <int MR, int NP, int8_operands Form>
__attribute__((target("avx2,fma,f16c"), always_inline)) inline void int8_tile(const packed_call& g, int i0, int p0,
                                                                             next_block_prefetch next, bool paired) {
  if constexpr (Form == int8_operands::sign_trick && NP == 1) {
    if (paired) return packed_tile_paired<MR>(g, i0, p0, next);
  }
  if constexpr (Form == int8_operands::nonnegative_narrow) {
    packed_tile_narrow_pairs<MR, NP>(g, i0, p0, next);
  } else if constexpr (Form == int8_operands::shifted_narrow) {
    packed_tile<MR, NP, true>(g, i0, p0, next, g.comp + static_cast<std::size_t>(p0) * panel_width);
  } else {
    packed_tile<MR, NP, Form == int8_operands::nonnegative>(g, i0, p0, next);
  }
}

// Panels [p0, p1): one panel (16 columns) at a time for every row in tiles of 4 that prefetch
// the next panel (where there are two tiles or more, as in avx512::gemm_packed), in the panel's
// group schedule (signed activations) where the weights have one; a single row takes 2 panels
// per tile in plain order.
template <int8_operands Form>
TASKMOE_TARGET_AVX2 void gemm_packed_as(const packed_call& g, int p0, int p1) {
  if (g.m == 1) {
    int p = p0;
    for (; p + 2 <= p1; p += 2) int8_tile<1, 2, Form>(g, 0, p, {}, false);
    if (p < p1) int8_tile<1, 1, Form>(g, 0, p, {}, false);
    return;
  }
  const std::size_t pb = g.panel_bytes();
  const int tiles = (g.m + 3) / 4;
  const bool paired = Form == int8_operands::sign_trick && g.group_order != nullptr;
  const int stride = Form == int8_operands::nonnegative_narrow ? 2 * k_group : k_group;
  for (int p = p0; p < p1; ++p) {
    const block_prefetch_plan plan(g.data + static_cast<std::size_t>(p + 1) * pb, tiles > 1 && p + 1 < p1 ? pb : 0,
                                   g.k4, stride, tiles);
    int i = 0, t = 0;
    for (; i + 4 <= g.m; i += 4, ++t) int8_tile<4, 1, Form>(g, i, p, plan.share(t), paired);
    const next_block_prefetch last = plan.share(t);
    switch (g.m - i) {
      case 3: int8_tile<3, 1, Form>(g, i, p, last, paired); break;
      case 2: int8_tile<2, 1, Form>(g, i, p, last, paired); break;
      case 1: int8_tile<1, 1, Form>(g, i, p, last, paired); break;
      default: break;
    }
  }
}

// The sign-trick kernel (any weights; g.a signed, or non-negative as flagged).
TASKMOE_TARGET_AVX2 inline void gemm_packed(const packed_call& g, int p0, int p1) {
  if (g.a_nonnegative) return gemm_packed_as<int8_operands::nonnegative>(g, p0, p1);
  gemm_packed_as<int8_operands::sign_trick>(g, p0, p1);
}

// The narrow-weights kernel: g.a shifted by +128, or non-negative (unshifted) as flagged.
TASKMOE_TARGET_AVX2 inline void gemm_packed_narrow(const packed_call& g, int p0, int p1) {
  if (g.a_nonnegative) return gemm_packed_as<int8_operands::nonnegative_narrow>(g, p0, p1);
  gemm_packed_as<int8_operands::shifted_narrow>(g, p0, p1);
}

// Column sums of one packed panel (the VNNI compensation, at pack time), read back from the
// panel just written while it is still in cache: a pass over the source rows instead cost a
// twelfth of a file's load. Per 32 bytes (8 columns x 4 k) vpmaddubsw with ones adds byte pairs
// into int16 (|sum| <= 256 per group: 64 groups stay below 2^15), vpmaddwd widens per column.
TASKMOE_TARGET_AVX2 inline void panel_column_sums(const std::int8_t* panel, int k4, std::int32_t* sums) {
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  __m256i acc[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
  const int groups = k4 / k_group;
  for (int g0 = 0; g0 < groups; g0 += 64) {
    __m256i pairs[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    const int g1 = std::min(groups, g0 + 64);
    for (int g = g0; g < g1; ++g)
      for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + g * panel_width * k_group + 32 * h));
        pairs[h] = _mm256_add_epi16(pairs[h], _mm256_maddubs_epi16(ones8, v));
      }
    for (int h = 0; h < 2; ++h) acc[h] = _mm256_add_epi32(acc[h], _mm256_madd_epi16(pairs[h], ones16));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums), acc[0]);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums + 8), acc[1]);
}

// Whether two groups' lane sums (32 int16 each) add to at most limit in every lane.
TASKMOE_TARGET_AVX2 inline bool groups_fit(const std::uint16_t* x, const std::uint16_t* y, int limit) {
  const __m256i bound = _mm256_set1_epi16(static_cast<short>(limit));
  __m256i over = _mm256_setzero_si256();
  for (int h = 0; h < 2; ++h) {
    const __m256i sum = _mm256_add_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16 * h)),
                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + 16 * h)));
    over = _mm256_or_si256(over, _mm256_cmpgt_epi16(sum, bound));
  }
  return _mm256_testz_si256(over, over) != 0;
}

// The group schedule of one packed panel for packed_tile_paired (at pack time, where the
// sign-trick kernel may run): order[0, groups) a permutation of the panel's k-groups, pairs first,
// then the groups left single; returns how many groups are in pairs. Two groups pair when in each
// of the 32 int16 lanes (16 columns x 2 byte pairs) their sums of |w| add to at most 258: with
// |a| <= 127 the sum of the two groups' pair sums is then at most 127 * 258 = 32766 in magnitude,
// exact in int16. Greedy and local: each group in order with the first free one of the next 32
// that fits (at most 32 checks per group at load; the kernel reads the panel nearly in order). On
// trained weights (the demo model) 95 % of the groups pair; a greedy over the whole panel, largest
// lanes first, paired 96-98 % and ran no faster.
TASKMOE_TARGET_AVX2 inline int pair_groups(const std::int8_t* panel, int groups, std::uint16_t* order,
                                           std::vector<std::uint16_t>& scratch) {
  constexpr int limit = 258, window = 32;
  scratch.resize(static_cast<std::size_t>(groups) * 33);  // lane sums [groups][32], then state [groups]
  std::uint16_t* lanes = scratch.data();
  std::uint16_t* state = lanes + static_cast<std::size_t>(groups) * 32;  // 0 free, 1 first of a pair, 2 second
  std::fill(state, state + groups, std::uint16_t{0});  // the lane sums are all written below
  const __m256i ones8 = _mm256_set1_epi8(1);
  for (int g = 0; g < groups; ++g)
    for (int h = 0; h < 2; ++h) {
      const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + g * panel_width * k_group + 32 * h));
      // |w0| + |w1| per int16 lane (|-128| = 128 as an unsigned byte, times 1: exact).
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes + g * 32 + 16 * h), _mm256_maddubs_epi16(_mm256_abs_epi8(w), ones8));
    }
  int at = 0;
  for (int g = 0; g < groups; ++g) {
    if (state[g] != 0) continue;
    for (int q = g + 1; q < groups && q <= g + window; ++q)
      if (state[q] == 0 && groups_fit(lanes + g * 32, lanes + q * 32, limit)) {
        state[g] = 1;
        state[q] = 2;
        order[at++] = static_cast<std::uint16_t>(g);
        order[at++] = static_cast<std::uint16_t>(q);
        break;
      }
  }
  const int paired = at;
  for (int g = 0; g < groups; ++g)
    if (state[g] == 0) order[at++] = static_cast<std::uint16_t>(g);
  return paired;
}

// Packing (packed_int8::pack): the whole k-groups of one panel from its 16 source rows. Each
// 8 x 8 block of 4-byte groups (8 rows x 32 bytes) is transposed in registers, so that one
// group's 8 rows leave as one 32-byte store: the scalar form, one 4-byte copy per row and
// group, made packing a fifth of a file's load time.
TASKMOE_TARGET_AVX2 inline void pack_panel_int8(const std::int8_t* const* rows, int groups, std::int8_t* dst) {
  constexpr int block = panel_width * k_group;  // bytes per k-group in a panel
  int g = 0;
  for (; g + 8 <= groups; g += 8)
    for (int half = 0; half < 2; ++half) {
      __m256i r[8];
      for (int c = 0; c < 8; ++c)
        r[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[8 * half + c] + k_group * g));
      // t: pairs of rows per group; u: quads (groups q and q + 4 in the two 128-bit lanes).
      __m256i t[8], u[8];
      for (int c = 0; c < 8; c += 2) {
        t[c] = _mm256_unpacklo_epi32(r[c], r[c + 1]);      // groups 0, 1 | 4, 5
        t[c + 1] = _mm256_unpackhi_epi32(r[c], r[c + 1]);  // groups 2, 3 | 6, 7
      }
      for (int c = 0; c < 8; c += 4)
        for (int h = 0; h < 2; ++h) {
          u[c + 2 * h] = _mm256_unpacklo_epi64(t[c + h], t[c + h + 2]);      // group 2h | 2h + 4
          u[c + 2 * h + 1] = _mm256_unpackhi_epi64(t[c + h], t[c + h + 2]);  // group 2h + 1 | 2h + 5
        }
      for (int q = 0; q < 4; ++q) {
        std::int8_t* out = dst + static_cast<std::size_t>(g + q) * block + 32 * half;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute2x128_si256(u[q], u[q + 4], 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 4 * block),
                            _mm256_permute2x128_si256(u[q], u[q + 4], 0x31));
      }
    }
  for (; g < groups; ++g)
    for (int c = 0; c < panel_width; ++c)
      std::memcpy(dst + static_cast<std::size_t>(g) * block + c * k_group, rows[c] + k_group * g, k_group);
}

// int8_weights::narrow on one row (packed_int8::pack; detail::narrow_row is the scalar form and
// the definition): returns max|w|; where it exceeds limit, dst = round-half-away(w * limit / max|w|).
// In int16 lanes: N = |w| * 2 limit + m over d = 2m is that rounding, and floor(N / d) is
// mulhi(N, ceil(2^23 / d)) >> 7 exactly (N * the reciprocal's excess < N <= 2 * 128 * 64 + 128
// < 2^23 / d: the floor never crosses an integer).
__attribute__((target("avx2,fma,f16c"), always_inline)) inline __m256i narrow_lanes(__m256i w, __m256i twice_limit,
                                                                                   __m256i half, __m256i reciprocal) {
  const __m256i n = _mm256_add_epi16(_mm256_mullo_epi16(_mm256_abs_epi16(w), twice_limit), half);
  return _mm256_sign_epi16(_mm256_srli_epi16(_mm256_mulhi_epu16(n, reciprocal), 7), w);
}
TASKMOE_TARGET_AVX2 inline int narrow_row(const std::int8_t* src, int k, std::int8_t* dst, int limit) {
  __m256i top = _mm256_setzero_si256();
  int kk = 0;
  for (; kk + 32 <= k; kk += 32)
    top = _mm256_max_epu8(top, _mm256_abs_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + kk))));
  alignas(32) std::uint8_t lanes[32];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), top);
  int m = 0;
  for (int l = 0; l < 32; ++l) m = std::max(m, static_cast<int>(lanes[l]));
  for (int t = kk; t < k; ++t) m = std::max(m, src[t] < 0 ? -src[t] : static_cast<int>(src[t]));
  if (m <= limit) return m;
  const int d = 2 * m;
  const __m256i twice_limit = _mm256_set1_epi16(static_cast<short>(2 * limit)), half = _mm256_set1_epi16(static_cast<short>(m));
  const __m256i reciprocal = _mm256_set1_epi16(static_cast<short>(((1 << 23) + d - 1) / d));
  for (kk = 0; kk + 32 <= k; kk += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + kk));
    const __m256i lo = narrow_lanes(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)), twice_limit, half, reciprocal);
    const __m256i hi = narrow_lanes(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1)), twice_limit, half, reciprocal);
    // packs works per 128-bit lane: lo's and hi's halves interleave, the permute restores order.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + kk), _mm256_permute4x64_epi64(_mm256_packs_epi16(lo, hi), 0xD8));
  }
  for (; kk < k; ++kk) {
    const int w = src[kk], mag = ((w < 0 ? -w : w) * 2 * limit + m) / d;
    dst[kk] = static_cast<std::int8_t>(w < 0 ? -mag : mag);
  }
  return m;
}

// ---- packed f32 GEMM (detail/packed_args.hpp) -------------------------------------------------
// Two ymm per panel and k; a tile of MR rows x NP panels keeps 2 * MR * NP accumulators (at most
// 12 of the 16 registers). Same operations per lane as generic::gemm_packed_f32.

template <int MR, int NP>
TASKMOE_TARGET_AVX2 void packed_f32_tile(const packed_f32_call& g, int i0, int p0, next_block_prefetch next = {}) {
  __m256 acc[MR][NP][2];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NP; ++r) acc[i][r][0] = acc[i][r][1] = _mm256_setzero_ps();
  const std::size_t pf = g.panel_floats();
  const float* b = g.data + static_cast<std::size_t>(p0) * pf;
  const float* a = g.a + static_cast<std::size_t>(i0) * g.lda;
  const std::size_t lda = static_cast<std::size_t>(g.lda);
  const int k = g.k;  // locals: GCC otherwise reloads g.k and spills acc on every k
  for (int kk = 0; kk < k;) {
    for (const int stop = next.until(kk, k); kk < stop; ++kk) {
      __m256 w[NP][2];
      for (int r = 0; r < NP; ++r) {
        const float* src = b + r * pf + static_cast<std::size_t>(kk) * panel_width;
        w[r][0] = _mm256_load_ps(src);
        w[r][1] = _mm256_load_ps(src + 8);
      }
      for (int i = 0; i < MR; ++i) {
        const __m256 av = _mm256_broadcast_ss(a + static_cast<std::size_t>(i) * lda + kk);
        for (int r = 0; r < NP; ++r)
          for (int h = 0; h < 2; ++h) acc[i][r][h] = _mm256_fmadd_ps(av, w[r][h], acc[i][r][h]);
      }
    }
    next.burst();
  }
  // Epilogue loops fully unrolled and without early exits (an empty mask stores nothing): GCC
  // otherwise indexes acc in memory and keeps it on the stack, stored on every k.
  const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int r = 0; r < NP; ++r)
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const int j = (p0 + r) * panel_width + 8 * h;
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(g.n - j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      const __m256 bias = g.bias != nullptr ? _mm256_loadu_ps(g.bias + j) : zero;
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        __m256 v = acc[i][r][h];
        if (g.bias != nullptr) v = _mm256_add_ps(v, bias);
        if (g.relu) v = _mm256_max_ps(v, zero);
        store_columns(g.c + static_cast<std::size_t>(i0 + i) * g.ldc + j, v, g.n - j, mask, g.accumulate);
      }
    }
}

// One panel at a time for every row in tiles of 6 that prefetch the next panel; a single row
// streams 4 panels at once.
TASKMOE_TARGET_AVX2 inline void gemm_packed_f32(const packed_f32_call& g, int p0, int p1) {
  if (g.m == 1) {
    int p = p0;
    for (; p + 4 <= p1; p += 4) packed_f32_tile<1, 4>(g, 0, p);
    for (; p < p1; ++p) packed_f32_tile<1, 1>(g, 0, p);
    return;
  }
  const std::size_t pf = g.panel_floats();
  const int tiles = (g.m + 5) / 6;
  for (int p = p0; p < p1; ++p) {
    const float* next = g.data + static_cast<std::size_t>(p + 1) * pf;
    const block_prefetch_plan plan(next, p + 1 < p1 ? pf * sizeof(float) : 0, g.k, 1, tiles);
    int i = 0, t = 0;
    for (; i + 6 <= g.m; i += 6, ++t) packed_f32_tile<6, 1>(g, i, p, plan.share(t));
    const next_block_prefetch last = plan.share(t);
    switch (g.m - i) {
      case 5: packed_f32_tile<5, 1>(g, i, p, last); break;
      case 4: packed_f32_tile<4, 1>(g, i, p, last); break;
      case 3: packed_f32_tile<3, 1>(g, i, p, last); break;
      case 2: packed_f32_tile<2, 1>(g, i, p, last); break;
      case 1: packed_f32_tile<1, 1>(g, i, p, last); break;
      default: break;
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
  const float inv = 127.0f / amax;
  if (!(inv < __builtin_inff())) {  // all zero, or max|x| < 127 / FLT_MAX: as generic
    for (int t = 0; t < n; ++t) q[t] = 0;
    *scale = 0.0f;
    return true;
  }
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
// Head-major forms, for dh not a multiple of 8 (the key-major ones below need whole registers per head).
TASKMOE_TARGET_AVX2 inline void attention_scores_by_head(const float* q, const float* k, int ldk, const int* rows, int n,
                                                 int heads, int dh, float scale, float* s, int lds) {
  const int dv = dh & ~7;
  for (int h = 0; h < heads; ++h) {
    const float* qh = q + static_cast<std::size_t>(h) * dh;
    float* sh = s + static_cast<std::size_t>(h) * lds;
    for (int j = 0; j < n; ++j) {
      const float* kj = k + key_row(rows, j) * ldk + static_cast<std::size_t>(h) * dh;
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

TASKMOE_TARGET_AVX2 inline void attention_combine_by_head(const float* p, int lds, const float* v, int ldv,
                                                  const int* rows, int n, int heads, int dh, float* out) {
  for (int h = 0; h < heads; ++h) {
    const float* ph = p + static_cast<std::size_t>(h) * lds;
    float* oh = out + static_cast<std::size_t>(h) * dh;
    const float* vh = v + static_cast<std::size_t>(h) * dh;
    int c = 0;
    for (; c + 32 <= dh; c += 32) {
      __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
      for (int j = 0; j < n; ++j) {
        const __m256 w = _mm256_set1_ps(ph[j]);
        const float* vj = vh + key_row(rows, j) * ldv + c;
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
        o0 = _mm256_fmadd_ps(_mm256_set1_ps(ph[j]), _mm256_loadu_ps(vh + key_row(rows, j) * ldv + c), o0);
      _mm256_storeu_ps(oh + c, o0);
    }
    for (; c < dh; ++c) {
      float acc = 0.0f;
      for (int j = 0; j < n; ++j) acc += ph[j] * vh[key_row(rows, j) * ldv + c];
      oh[c] = acc;
    }
  }
}

// y[i] += b[i]; 8 floats per step.
// Lane u of the result = the sum of v[u]'s eight lanes.
TASKMOE_TARGET_AVX2 inline __m256 hsum8(const __m256* v) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  // a = sums of v0..v3 over the low 128 bits | the same over the high 128 bits; b for v4..v7
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// 8 keys / values as floats: float32 as stored, float16 (the K/V cache's half form) converted.
TASKMOE_TARGET_AVX2 inline __m256 load_kv(const float* p) { return _mm256_loadu_ps(p); }
TASKMOE_TARGET_AVX2 inline __m256 load_kv(const std::uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// s[h * lds + j] = (q_h . k_j,h) / scale for h < heads, j < n. Keys in blocks of eight: the
// block's rows are read once, head by head (the decoder's keys are rows kilobytes apart, a slot or
// a source token per row: reading one head's slice of every key, then the next head's, left the
// prefetcher nothing to follow), eight independent FMA chains per head (one per key), and one
// reduction, division and vector store per head gives its eight scores.
template <class T>
TASKMOE_TARGET_AVX2 inline void attention_scores(const float* q, const T* k, int ldk, const int* rows, int n,
                                                 int heads, int dh, float scale, float* s, int lds) {
  if constexpr (std::is_same<T, float>::value)
    if (dh % 8 != 0) return attention_scores_by_head(q, k, ldk, rows, n, heads, dh, scale, s, lds);
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int j = 0; j < n; j += 8) {
    const int kn = n - j < 8 ? n - j : 8;
    const T* kr[8];  // a short block repeats its last key (computed, never stored)
    for (int u = 0; u < 8; ++u) kr[u] = k + key_row(rows, j + (u < kn ? u : kn - 1)) * ldk;
    for (int h = 0; h < heads; ++h) {
      const std::size_t off = static_cast<std::size_t>(h) * dh;
      __m256 part[8];
      for (int u = 0; u < 8; ++u) part[u] = _mm256_setzero_ps();
      for (int c = 0; c < dh; c += 8) {
        const __m256 qv = _mm256_loadu_ps(q + off + c);
        for (int u = 0; u < 8; ++u) part[u] = _mm256_fmadd_ps(qv, load_kv(kr[u] + off + c), part[u]);
      }
      const __m256 sums = _mm256_div_ps(hsum8(part), vscale);
      float* sh = s + static_cast<std::size_t>(h) * lds + j;
      if (kn == 8) {
        _mm256_storeu_ps(sh, sums);
      } else {
        alignas(32) float tail[8];
        _mm256_store_ps(tail, sums);
        for (int u = 0; u < kn; ++u) sh[u] = tail[u];
      }
    }
  }
}

// out[h * dh + c] = sum_j p[h * lds + j] * v[r_j * ldv + h * dh + c] (r_j as in
// attention_scores). Key-major like attention_scores: four keys' rows per sweep of the output
// (which stays in L1), each row one contiguous read; per head, its four probabilities are
// broadcast once for all of its dh / 8 vectors.
template <class T>
TASKMOE_TARGET_AVX2 inline void attention_combine(const float* p, int lds, const T* v, int ldv,
                                                  const int* rows, int n, int heads, int dh, float* out) {
  if constexpr (std::is_same<T, float>::value)
    if (dh % 8 != 0) return attention_combine_by_head(p, lds, v, ldv, rows, n, heads, dh, out);
  const int width = heads * dh;
  for (int c = 0; c < width; c += 8) _mm256_storeu_ps(out + c, _mm256_setzero_ps());
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const T* v0 = v + key_row(rows, j) * ldv;
    const T* v1 = v + key_row(rows, j + 1) * ldv;
    const T* v2 = v + key_row(rows, j + 2) * ldv;
    const T* v3 = v + key_row(rows, j + 3) * ldv;
    for (int h = 0; h < heads; ++h) {
      const float* ph = p + static_cast<std::size_t>(h) * lds + j;
      const __m256 w0 = _mm256_broadcast_ss(ph), w1 = _mm256_broadcast_ss(ph + 1);
      const __m256 w2 = _mm256_broadcast_ss(ph + 2), w3 = _mm256_broadcast_ss(ph + 3);
      for (int c = h * dh; c < (h + 1) * dh; c += 8) {
        __m256 o = _mm256_loadu_ps(out + c);
        o = _mm256_fmadd_ps(w0, load_kv(v0 + c), o);
        o = _mm256_fmadd_ps(w1, load_kv(v1 + c), o);
        o = _mm256_fmadd_ps(w2, load_kv(v2 + c), o);
        o = _mm256_fmadd_ps(w3, load_kv(v3 + c), o);
        _mm256_storeu_ps(out + c, o);
      }
    }
  }
  for (; j < n; ++j) {
    const T* v0 = v + key_row(rows, j) * ldv;
    for (int h = 0; h < heads; ++h) {
      const __m256 w0 = _mm256_broadcast_ss(p + static_cast<std::size_t>(h) * lds + j);
      for (int c = h * dh; c < (h + 1) * dh; c += 8)
        _mm256_storeu_ps(out + c, _mm256_fmadd_ps(w0, load_kv(v0 + c), _mm256_loadu_ps(out + c)));
    }
  }
}

// y = x rounded to float16 (nearest even), 8 at a time.
TASKMOE_TARGET_AVX2 inline void to_float16(const float* x, int n, std::uint16_t* y) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  if (i < n) {
    alignas(32) float in[8] = {};
    alignas(16) std::uint16_t outh[8];
    for (int t = i; t < n; ++t) in[t - i] = x[t];
    _mm_store_si128(reinterpret_cast<__m128i*>(outh), _mm256_cvtps_ph(_mm256_load_ps(in), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (int t = i; t < n; ++t) y[t] = outh[t - i];
  }
}

// y = x widened from float16 (exact), 8 at a time.
TASKMOE_TARGET_AVX2 inline void from_float16(const std::uint16_t* x, int n, float* y) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  if (i < n) {
    alignas(16) std::uint16_t in[8] = {};
    alignas(32) float out[8];
    for (int t = i; t < n; ++t) in[t - i] = x[t];
    _mm256_store_ps(out, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(in))));
    for (int t = i; t < n; ++t) y[t] = out[t - i];
  }
}

TASKMOE_TARGET_AVX2 inline void add_inplace(float* y, const float* b, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < n; ++i) y[i] += b[i];
}

// exp(x) for x <= 0, 8 lanes (detail/exp_poly.hpp: Cephes' polynomial, about 1 ulp). Below -87.3
// (x = -inf included) it gives 2^-126 instead of 0, which no sum >= 1 can see; NaN stays NaN
// (max_ps returns its second operand when either is NaN). arch/avx512.hpp does the same at 16 lanes.
TASKMOE_TARGET_AVX2 inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(exp_poly::min_x), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(exp_poly::log2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(exp_poly::ln2_hi), x);  // x - n ln2, in two parts
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(exp_poly::ln2_lo), r);
  __m256 p = _mm256_set1_ps(exp_poly::coeffs[0]);
  for (int c = 1; c < 6; ++c) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_poly::coeffs[c]));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));  // n in [-126, 0]: 2^n is a normal float
}

TASKMOE_TARGET_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// log_softmax of one row, as generic::log_softmax_row (fully masked row -> all -inf), with the
// exponentials 8 at a time: beam search runs it over the vocabulary of every live row per step.
TASKMOE_TARGET_AVX2 inline void log_softmax_row(const float* x, int n, float* y) {
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  __m256 vm = _mm256_set1_ps(neg_inf);
  int i = 0;
  for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  float mx = neg_inf;
  for (const float l : lanes) mx = std::max(mx, l);
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  if (mx == neg_inf) {
    for (i = 0; i < n; ++i) y[i] = neg_inf;
    return;
  }
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx)));
  float sum = hsum(acc);
  for (; i < n; ++i) sum += std::exp(x[i] - mx);
  const float shift = mx + std::log(sum);
  const __m256 vs = _mm256_set1_ps(shift);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
  for (; i < n; ++i) y[i] = x[i] - shift;
}

#undef TASKMOE_TARGET_AVX2

}  // namespace avx2
}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe

#endif  // TASKMOE_KERNELS_X86
