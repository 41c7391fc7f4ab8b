#pragma once
// The packed weight layouts shared by every ISA's kernel (kernels/packed_gemm.hpp packs them,
// arch/*.hpp multiply with them), the arguments of one packed GEMM call, and how the attention
// kernels find a key row.
//
// Layout: columns (weight rows) in panels of 16, K padded to a multiple of 4. Panel p, k-group g
// (k = 4g .. 4g+3), column c, byte b lives at data[p * k4 * 16 + g * 64 + c * 4 + b]; padding is
// zero. One 64-byte load is then 16 columns x 4 k: the operand of one AVX-512 VNNI vpdpbusd
// against 4 broadcast activation bytes, or two AVX2 vectors. No horizontal sums anywhere: each
// accumulator lane is one output.

#include <algorithm>  // std::min, std::max
#include <cstddef>    // std::size_t
#include <cstdint>    // int8_t, uint8_t, int32_t

namespace taskmoe {
namespace kernels {
namespace detail {

constexpr int panel_width = 16;  // columns per panel
constexpr int k_group = 4;       // k values per 32-bit lane

// Everything one call needs. a holds quantized activations [m, k4] (lda >= k4 bytes): signed
// (generic, AVX2) or shifted by +128 (VNNI, which multiplies unsigned by signed bytes; comp[j] =
// 128 * sum_k w[j, k] takes the shift back out exactly).
struct packed_call {
  int m = 0;
  int n = 0;   // real columns (the last panel may be partial)
  int k4 = 0;  // padded depth
  const std::uint8_t* a = nullptr;
  int lda = 0;
  const float* a_scales = nullptr;  // [m]
  const std::int8_t* data = nullptr;
  const std::int32_t* comp = nullptr;  // [panels * 16]
  const float* w_scales = nullptr;     // [panels * 16], zero padded
  const float* bias = nullptr;         // [panels * 16] or null
  float* c = nullptr;
  int ldc = 0;
  bool relu = false;        // max(0, .) after the bias
  bool accumulate = false;  // c += result instead of c = result
  // Every activation byte is >= 0 (a ReLU's output): AVX2 multiplies them as unsigned bytes
  // directly (pair sums <= 2 * 127 * 128, exact), without the sign trick's extra operation.
  bool a_nonnegative = false;
  // The pair-products kernel's activations (arch/avx2_pairs.hpp: expand_rows): int16 pairs
  // [m, k4 / 2] words (ld_pairs) and each row's sum of a[2t] * a[2t + 1]; null for the others.
  const std::int32_t* a_pairs = nullptr;
  int ld_pairs = 0;
  const std::int32_t* a_pair_sums = nullptr;
  // The sign-trick kernel's group schedule (arch/avx2.hpp: pair_groups, packed_tile_paired), null
  // where the weights have none: per panel, group_order [k4 / 4] k-group indices, pairs of groups
  // first, and paired_groups[panel] of them in pairs.
  const std::uint16_t* group_order = nullptr;
  const std::uint16_t* paired_groups = nullptr;
  std::size_t panel_bytes() const noexcept { return static_cast<std::size_t>(k4) * panel_width; }
};

// f32 layout: columns in panels of 16, k-major inside a panel: panel p, depth k, column c at
// data[p * K * 16 + k * 16 + c] (padding columns zero). One 64-byte load is 16 columns at one k:
// the operand of one AVX-512 FMA (two AVX2 FMAs) against a broadcast activation. Each panel is
// one contiguous stream, which is what the memory-bound single-row case needs.
struct packed_f32_call {
  int m = 0;
  int n = 0;  // real columns
  int k = 0;
  const float* a = nullptr;  // [m, k] (lda)
  int lda = 0;
  const float* data = nullptr;
  const float* bias = nullptr;  // [panels * 16] or null
  float* c = nullptr;
  int ldc = 0;
  bool relu = false;
  bool accumulate = false;
  std::size_t panel_floats() const noexcept { return static_cast<std::size_t>(k) * panel_width; }
};

// Software prefetch for the packed GEMMs: while the row tiles of one column block run over it,
// they pull the next block into L2, each tile an equal share of its cache lines in bursts spread
// over its k loop. A decoder step's weights come from L3 (the step's matrices do not fit L2), and
// without this the first tile over each block waits on them (docs/performance.md, stop 32). A
// tile's k loop runs in chunks, so the loop inside a chunk is the same as without prefetching:
//   for (int kk = 0; kk < k;) {
//     for (const int stop = next.until(kk, k); kk < stop; ++kk) { ... }
//     next.burst();
//   }
class next_block_prefetch {
 public:
  next_block_prefetch() = default;  // nothing to fetch
  // The end of the k range [kk, until) to run before the next burst.
  int until(int kk, int k) const noexcept { return left_ > 0 && k - kk > every_ ? kk + every_ : k; }
  void burst() noexcept { fetch(burst_ < left_ ? burst_ : left_); }
  // Or one line at a time, and at the end whatever is left (a loop that cannot take bursts).
  void one_line() noexcept { fetch(left_ > 0 ? 1 : 0); }
  void rest() noexcept { fetch(left_); }

  static constexpr std::size_t line = 64;

 private:
  friend class block_prefetch_plan;
  void fetch(int n) noexcept {
    if (n <= 0) return;
    for (int l = 0; l < n; ++l) __builtin_prefetch(next_ + l * line, 0, 2);  // 2: into L2 (prefetcht1)
    next_ += static_cast<std::size_t>(n) * line;
    left_ -= n;
  }
  // 16 bytes, passed in two registers: a larger argument goes through the stack, and reloading
  // it there waited for the tile's output stores (10-20 % of an int8 GEMM at 256 rows).
  const char* next_ = nullptr;
  std::int32_t left_ = 0;     // lines still to fetch
  std::int16_t every_ = 1;    // k between bursts (a multiple of the tile loop's stride)
  std::int16_t burst_ = 1;    // lines per burst
};

// The next block [block, block + bytes) split into equal shares for `tiles` tile loops over
// [0, k) in steps of `stride`. Built once per block; a tile only takes its share. A block over
// max_bytes is not fetched: in L2 beside the current block and the activations it evicts them
// (f32 AVX-512 at K 2048 / 4096, 1 MB blocks: 6-14 % slower than no prefetch), and its panels are
// long enough for the hardware prefetcher.
class block_prefetch_plan {
 public:
  static constexpr std::size_t max_bytes = std::size_t{256} << 10;

  block_prefetch_plan(const void* block, std::size_t bytes, int k, int stride, int tiles)
      : block_(static_cast<const char*>(block)), lines_(bytes <= max_bytes ? (bytes + line - 1) / line : 0) {
    share_ = (lines_ + static_cast<std::size_t>(tiles) - 1) / static_cast<std::size_t>(tiles);
    const std::size_t steps = std::max<std::size_t>(static_cast<std::size_t>(k / stride), 1);
    std::size_t every = 1, burst = 1;
    if (share_ <= steps)
      every = steps / std::max<std::size_t>(share_, 1);
    else
      burst = (share_ + steps - 1) / steps;
    // Bounded for the 16-bit fields: a shorter gap only fetches earlier.
    every_ = static_cast<std::int16_t>(std::min<std::size_t>(every * static_cast<std::size_t>(stride), 32767 / stride * stride));
    burst_ = static_cast<std::int16_t>(std::min<std::size_t>(burst, 32767));
  }
  next_block_prefetch share(int tile) const noexcept {
    next_block_prefetch p;
    const std::size_t first = std::min(lines_, share_ * static_cast<std::size_t>(tile));
    p.next_ = block_ + first * line;
    p.left_ = static_cast<std::int32_t>(std::min(lines_, first + share_) - first);
    p.every_ = every_;
    p.burst_ = burst_;
    return p;
  }

 private:
  static constexpr std::size_t line = next_block_prefetch::line;
  const char* block_;
  std::size_t lines_;
  std::size_t share_ = 0;  // lines per tile
  std::int16_t every_ = 1;
  std::int16_t burst_ = 1;
};

// Attention: key / value j sits in row key_row(rows, j) of k / v, rows[j], or j when rows is null.
// The decoder's self-attention cache hands each row its own list of slots, so beam reordering
// copies slot numbers, not keys.
inline std::size_t key_row(const int* rows, int j) noexcept {
  return static_cast<std::size_t>(rows != nullptr ? rows[j] : j);
}

}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe
