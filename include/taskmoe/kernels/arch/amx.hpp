#pragma once
// AMX int8 kernel (Intel Sapphire Rapids and later: AMX-TILE + AMX-INT8). Used for the packed
// int8 GEMM at isa::avx512 when detect_cpu_features().amx_int8 (the CPU has it and the OS granted
// the tile state), the call has enough rows and K fills whole tiles; the AVX-512 VNNI kernel
// (arch/avx512.hpp) takes every other call. Same rules as the other arch files: every function
// carries its target attribute.
//
// One tdpbusd multiplies a 16-row x 64-byte tile of activations (shifted to unsigned, a + 128, as
// for VNNI) by a 16 k-group x 64-byte tile of weights and adds into 16 x 16 int32 sums: 16,384
// multiply-adds per instruction. The packed panel layout (detail/packed_args.hpp) already is the
// weight tile's layout: 16 consecutive k-groups of one panel are one tile, 64-byte stride. The
// sums go through the VNNI kernel's epilogue (avx512::packed_columns), so results are
// bit-identical to every other kernel.

#include <algorithm>  // std::min
#include <atomic>     // std::atomic_signal_fence
#include <cstddef>    // std::size_t
#include <cstdint>    // uint8_t, uint16_t, int32_t
#include <cstring>    // std::memcpy, std::memset
#include <vector>     // std::vector

#include <taskmoe/kernels/arch/avx512.hpp>         // packed_columns, store_packed_row
#include <taskmoe/kernels/detail/packed_args.hpp>  // packed_call, panel layout
#include <taskmoe/kernels/isa.hpp>                 // TASKMOE_KERNELS_X86

#if TASKMOE_KERNELS_X86
#include <immintrin.h>  // AMX intrinsics (usable inside target("amx-tile,amx-int8") functions)

namespace taskmoe {
namespace kernels {
namespace detail {
namespace amx {

#define TASKMOE_TARGET_AMX \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8")))

constexpr int tile_rows = 16;   // rows of activations (and of sums) per tile
constexpr int tile_depth = 64;  // bytes of K per tile step: 16 k-groups

// Whether a call can run here: K must fill whole tile steps (a weight tile past a panel's end
// would read the next panel, or past the buffer). Every model dimension we ship is a multiple of 64.
inline bool fits(int k4) noexcept { return k4 % tile_depth == 0; }

// Palette 1, all eight tiles 16 rows x 64 bytes.
struct alignas(64) tile_config {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};
inline const tile_config& full_tiles() noexcept {
  static const tile_config config = [] {
    tile_config c;
    for (int t = 0; t < 8; ++t) {
      c.colsb[t] = tile_depth;
      c.rows[t] = tile_rows;
    }
    return c;
  }();
  return config;
}

// GCC's tile loads are asm statements without a memory operand: keep the compiler from moving
// plain stores to what a tile load reads (or loads of what a tile store wrote) across them.
inline void compiler_fence() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }

// 16 rows (a, lda) x 4 panels (b, panel stride pb) into sums[4][16 * 16]. Tiles: sums 0-3,
// activations 4, weights 5-7 (three, so a weight load never waits for the product that read the
// tile before it).
TASKMOE_TARGET_AMX inline void block_1x4(const std::uint8_t* a, int lda, const std::int8_t* b, std::size_t pb,
                                         int k4, std::int32_t* sums, next_block_prefetch next) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int kk = 0; kk < k4;) {
    for (const int stop = next.until(kk, k4); kk < stop; kk += tile_depth) {
      const std::int8_t* w = b + static_cast<std::size_t>(kk) * panel_width;
      _tile_loadd(4, a + kk, lda);
      _tile_loadd(5, w, tile_depth);
      _tile_dpbusd(0, 4, 5);
      _tile_loadd(6, w + pb, tile_depth);
      _tile_dpbusd(1, 4, 6);
      _tile_loadd(7, w + 2 * pb, tile_depth);
      _tile_dpbusd(2, 4, 7);
      _tile_loadd(5, w + 3 * pb, tile_depth);
      _tile_dpbusd(3, 4, 5);
    }
    next.burst();
  }
  constexpr int stride = panel_width * sizeof(std::int32_t);
  _tile_stored(0, sums, stride);
  _tile_stored(1, sums + 256, stride);
  _tile_stored(2, sums + 512, stride);
  _tile_stored(3, sums + 768, stride);
}

// 16 rows x 1 panel (the last panels of a call whose panel count is not a multiple of 4).
TASKMOE_TARGET_AMX inline void block_1x1(const std::uint8_t* a, int lda, const std::int8_t* b, int k4,
                                         std::int32_t* sums) {
  _tile_zero(0);
  for (int kk = 0; kk < k4; kk += tile_depth) {
    _tile_loadd(4, a + kk, lda);
    _tile_loadd(5, b + static_cast<std::size_t>(kk) * panel_width, tile_depth);
    _tile_dpbusd(0, 4, 5);
  }
  _tile_stored(0, sums, panel_width * sizeof(std::int32_t));
}

// Panels [p0, p1) of a call with fits(g.k4): blocks of 4 panels (64 * k4 bytes, in L2), and for
// each block every row in tiles of 16 that prefetch the next block. A last tile of fewer rows
// reads a zero-padded copy (a tile always loads 16 rows); its extra sums are never stored.
TASKMOE_TARGET_AMX inline void gemm_packed(const packed_call& g, int p0, int p1) {
  const int full = g.m / tile_rows * tile_rows;
  const int rest = g.m - full;
  thread_local std::vector<std::uint8_t> padded;
  if (rest > 0) {
    padded.assign(static_cast<std::size_t>(tile_rows) * g.k4, 0);
    for (int i = 0; i < rest; ++i)
      std::memcpy(padded.data() + static_cast<std::size_t>(i) * g.k4, g.a + static_cast<std::size_t>(full + i) * g.lda,
                  static_cast<std::size_t>(g.k4));
  }
  compiler_fence();
  _tile_loadconfig(&full_tiles());
  const std::size_t pb = g.panel_bytes();
  alignas(64) std::int32_t sums[4 * tile_rows * panel_width];
  const int tiles = (g.m + tile_rows - 1) / tile_rows;
  for (int p = p0; p < p1; p += 4) {
    const int np = std::min(4, p1 - p);
    const std::int8_t* b = g.data + static_cast<std::size_t>(p) * pb;
    // One tile streams the weights at the memory's pace: prefetches would only compete (as in
    // the VNNI kernel).
    const block_prefetch_plan plan(b + np * pb, tiles > 1 ? static_cast<std::size_t>(std::min(4, p1 - p - np)) * pb : 0,
                                   g.k4, tile_depth, tiles);
    for (int i0 = 0; i0 < g.m; i0 += tile_rows) {
      const bool whole = i0 < full;
      const std::uint8_t* a = whole ? g.a + static_cast<std::size_t>(i0) * g.lda : padded.data();
      const int lda = whole ? g.lda : g.k4;
      if (np == 4) {
        block_1x4(a, lda, b, pb, g.k4, sums, plan.share(i0 / tile_rows));
      } else {
        for (int r = 0; r < np; ++r) block_1x1(a, lda, b + r * pb, g.k4, sums + r * tile_rows * panel_width);
      }
      compiler_fence();
      const int rows = whole ? tile_rows : rest;
      for (int r = 0; r < np; ++r) {
        const avx512::packed_columns cols(g, (p + r) * panel_width);
        for (int i = 0; i < rows; ++i)
          avx512::store_packed_row(g, cols, i0 + i,
                                   _mm512_load_si512(sums + (r * tile_rows + i) * panel_width));
      }
    }
  }
  _tile_release();  // the tile state stays out of every later context switch's save
}

#undef TASKMOE_TARGET_AMX

}  // namespace amx
}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe

#endif  // TASKMOE_KERNELS_X86
