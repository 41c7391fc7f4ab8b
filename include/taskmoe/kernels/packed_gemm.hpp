#pragma once
// GEMM on weights packed once at load into the layout the kernels stream best
// (detail/packed_args.hpp): C = act(A Wᵀ scaled + bias) (+ C).
//
//   packed_f32 / gemm_packed_f32   f32 weights, f32 math (AVX-512, AVX2 or generic; bit-identical
//                    across them: one FMA per k in order). Why not oneDNN on the file's layout:
//                    its matmul re-packs plain weights on every call, which at decoding's small
//                    M costs about as much as the product itself.
//
//   pack_int8        int8 weights [n, k] with per-row scales (as in .tmoe files), optionally
//                    several matrices stacked by rows (fused QKV, the kept experts' fc1), with a
//                    per-part multiplier folded into scales and bias (a task gate).
//   quantize_pack    f32 or f16 weights: quantize_rows_int8 per row, then pack (the output
//                    projection of an int8 model whose embeddings are float).
//   gemm_packed_int8 quantizes A per row (the same quantizer as gemm_int8), runs the ISA's
//                    kernel: AVX-512 VNNI (u8 x s8 with the +128 shift compensated per column),
//                    AVX-VNNI, AVX2 (sign trick; Winograd's pair products for calls with many
//                    rows on CPUs with one vector-multiply pipe), or the generic reference, with
//                    the epilogue fused.
//
// The integer sums equal gemm_int8's exactly; the epilogue's scale + bias is one explicit fused
// multiply-add, so results are bit-identical on every ISA (generic, AVX2, AVX-512 VNNI). The file's row-major int8 stays the portable
// format; packing costs one pass over the weights at load.

#include <algorithm>  // std::min
#include <atomic>     // std::atomic
#include <cstddef>    // std::size_t
#include <cstdint>    // int8_t, uint8_t, int32_t
#include <cstdlib>    // std::aligned_alloc, std::free, std::getenv
#include <cstring>    // std::memset, std::memcpy
#include <memory>     // std::unique_ptr
#include <new>        // std::bad_alloc
#include <string>     // std::string
#include <vector>     // std::vector

#if defined(__linux__)
#include <sys/mman.h>  // mmap, munmap
#endif

#include <taskmoe/error.hpp>                        // invalid_argument_error
#include <taskmoe/kernels/arch/avx2.hpp>            // avx2::gemm_packed, flip_sign_bits
#include <taskmoe/kernels/arch/avx2_pairs.hpp>      // avx2_pairs::gemm_packed, expand_rows
#include <taskmoe/kernels/arch/amx.hpp>             // amx::gemm_packed
#include <taskmoe/kernels/arch/avx512.hpp>          // avx512::gemm_packed
#include <taskmoe/kernels/arch/avxvnni.hpp>         // avxvnni::gemm_packed
#include <taskmoe/kernels/arch/generic.hpp>         // generic::gemm_packed
#include <taskmoe/kernels/detail/args.hpp>          // argument checks
#include <taskmoe/kernels/detail/packed_args.hpp>   // packed_call
#include <taskmoe/kernels/elementwise.hpp>          // from_float16
#include <taskmoe/kernels/gemm.hpp>                 // quantize_rows_int8
#include <taskmoe/kernels/isa.hpp>                  // active_isa
#include <taskmoe/kernels/parallel.hpp>             // parallel_for

namespace taskmoe {
namespace kernels {

namespace detail {

// Zeroed, 64-byte aligned storage for packed panels (aligned vector loads). Large ones are
// anonymous mappings faulted in up front (MAP_POPULATE: the kernel zeroes and maps every page in
// one call instead of one trap per page, and packing writes them all anyway): page faults were
// about a third of a file's load time. Pages stay 4 KiB, so nothing is rounded up.
template <class T>
class aligned_buffer {
  static constexpr std::size_t map_min = std::size_t{256} << 10;

 public:
  aligned_buffer() = default;
  explicit aligned_buffer(std::size_t count) : size_(count) {
    if (count == 0) return;
    const std::size_t bytes = (count * sizeof(T) + 63) / 64 * 64;
#if defined(__linux__)
    if (bytes >= map_min) {
      void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
      if (mem == MAP_FAILED) throw std::bad_alloc();
      data_ = std::unique_ptr<T, freer>(static_cast<T*>(mem), freer{bytes});
      return;
    }
#endif
    void* mem = std::aligned_alloc(64, bytes);
    if (mem == nullptr) throw std::bad_alloc();
    std::memset(mem, 0, bytes);
    data_ = std::unique_ptr<T, freer>(static_cast<T*>(mem), freer{0});
  }
  T* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }

 private:
  struct freer {
    std::size_t mapped = 0;  // bytes of an mmap'ed buffer; 0: aligned_alloc
    void operator()(T* p) const noexcept {
#if defined(__linux__)
      if (mapped != 0) {
        ::munmap(p, mapped);
        return;
      }
#endif
      std::free(p);
    }
  };
  std::unique_ptr<T, freer> data_{nullptr, freer{0}};
  std::size_t size_ = 0;
};

}  // namespace detail

// How packed_int8::pack stores int8 weights. full: the file's values as they are; every kernel
// and CPU gives bit-identical results. narrow: each row whose largest |w| exceeds 64 requantized
// to [-64, 64] (w * 64 / max|w| rounded half away from zero, its scale times max|w| / 64). On
// AVX2 without VNNI, activations shifted to unsigned bytes then multiply the weights straight
// through vpmaddubsw without its int16 saturation (arch/avx2.hpp: gemm_packed_narrow), 2
// multiply-port operations per 32 products against the sign trick's 2.75; every kernel is
// still exact on the narrowed values, so results are bit-identical across kernels for one
// setting, and differ from full by the requantization (BENCHMARKS.md section 4: its BLEU).
// automatic: narrow where that kernel is the one that runs (AVX2, no VNNI of either kind, more
// than one vector-multiply pipe), full elsewhere; resolved by resolve_int8_weights() when packing.
enum class int8_weights { automatic, full, narrow };
constexpr int narrow_weight_limit = 64;

// "auto", "full", "narrow" (the command-line tools' and bindings' spelling).
inline const char* to_string(int8_weights w) noexcept {
  return w == int8_weights::full ? "full" : w == int8_weights::narrow ? "narrow" : "auto";
}
inline int8_weights int8_weights_from_string(const std::string& text) {
  for (int8_weights w : {int8_weights::automatic, int8_weights::full, int8_weights::narrow})
    if (text == to_string(w)) return w;
  throw invalid_argument_error("int8 weights must be auto, full or narrow, got '" + text + "'");
}

// Packed int8 weights; immutable once built, shared by any number of threads.
class packed_int8 {
 public:
  int rows() const noexcept { return n_; }   // output features
  int cols() const noexcept { return k_; }   // input features
  int panels() const noexcept { return panels_; }
  bool has_bias() const noexcept { return !bias_.empty(); }
  std::size_t bytes() const noexcept {
    return data_.size() + comp_.size() * sizeof(std::int32_t) + (scales_.size() + bias_.size()) * sizeof(float) +
           (group_order_.size() + paired_groups_.size()) * sizeof(std::uint16_t);
  }
  // Whether the panels carry the sign-trick kernel's group schedule (built where that kernel may run).
  bool has_group_schedule() const noexcept { return !group_order_.empty(); }
  // full or narrow (never automatic): how pack() stored the weights.
  int8_weights weights() const noexcept { return narrow_ ? int8_weights::narrow : int8_weights::full; }

  // One source matrix: rows [rows, k] (ldw) int8 with scales[rows]; bias[rows] or null. Its
  // scales and bias are multiplied by `multiplier` (exact for the integer part).
  struct part {
    const std::int8_t* w = nullptr;
    int rows = 0;
    int ldw = 0;
    const float* scales = nullptr;
    const float* bias = nullptr;
    float multiplier = 1.0f;
  };

  // Stacks `parts` by rows into one packed matrix of depth k, its weights stored as `weights`
  // says. Either every part has a bias or none.
  static packed_int8 pack(const std::vector<part>& parts, int k, int8_weights weights = int8_weights::full);

 private:
  friend struct packed_access;
  int n_ = 0, k_ = 0, k4_ = 0, panels_ = 0;
  bool narrow_ = false;
  detail::aligned_buffer<std::int8_t> data_;
  std::vector<std::int32_t> comp_;
  std::vector<float> scales_, bias_;
  std::vector<std::uint16_t> group_order_, paired_groups_;  // detail::packed_call::group_order
};

struct packed_access {
  static detail::packed_call call(const packed_int8& w) {
    detail::packed_call g;
    g.n = w.n_;
    g.k4 = w.k4_;
    g.data = w.data_.data();
    g.comp = w.comp_.data();
    g.w_scales = w.scales_.data();
    g.bias = w.bias_.empty() ? nullptr : w.bias_.data();
    if (w.has_group_schedule()) {
      g.group_order = w.group_order_.data();
      g.paired_groups = w.paired_groups_.data();
    }
    return g;
  }
  static int k4(const packed_int8& w) { return w.k4_; }
  static bool narrow(const packed_int8& w) { return w.narrow_; }
};

// Packed f32 weights (detail/packed_args.hpp, f32 layout); immutable once built.
class packed_f32 {
 public:
  int rows() const noexcept { return n_; }
  int cols() const noexcept { return k_; }
  int panels() const noexcept { return (n_ + detail::panel_width - 1) / detail::panel_width; }
  std::size_t bytes() const noexcept { return (data_.size() + bias_.size()) * sizeof(float); }

  // One source matrix [rows, k] (ldw) and its bias [rows] (or null).
  struct part {
    const float* w = nullptr;
    int rows = 0;
    int ldw = 0;
    const float* bias = nullptr;
  };

  // Stacks `parts` by rows (fused QKV). Either every part has a bias or none.
  static packed_f32 pack(const std::vector<part>& parts, int k) {
    const char* kernel = "packed_f32::pack";
    detail::check_size(kernel, "k", k);
    packed_f32 out;
    out.k_ = k;
    bool any_bias = false, all_bias = true;
    for (const part& p : parts) {
      detail::check_matrix(kernel, "w", p.w, p.rows, k, p.ldw);
      out.n_ += p.rows;
      any_bias = any_bias || p.bias != nullptr;
      all_bias = all_bias && p.bias != nullptr;
    }
    if (any_bias && !all_bias) detail::fail(kernel, "either every part has a bias or none");
    const std::size_t padded = static_cast<std::size_t>(out.panels()) * detail::panel_width;
    const std::size_t pf = static_cast<std::size_t>(k) * detail::panel_width;
    out.data_ = detail::aligned_buffer<float>(padded * static_cast<std::size_t>(k));
    if (any_bias) out.bias_.assign(padded, 0.0f);
    int j = 0;
    for (const part& p : parts)
      for (int r = 0; r < p.rows; ++r, ++j) {
        const float* src = p.w + static_cast<std::size_t>(r) * p.ldw;
        float* dst = out.data_.data() + static_cast<std::size_t>(j / detail::panel_width) * pf + j % detail::panel_width;
        for (int kk = 0; kk < k; ++kk) dst[static_cast<std::size_t>(kk) * detail::panel_width] = src[kk];
        if (any_bias) out.bias_[static_cast<std::size_t>(j)] = p.bias[r];
      }
    return out;
  }

  detail::packed_f32_call call() const noexcept {
    detail::packed_f32_call g;
    g.n = n_;
    g.k = k_;
    g.data = data_.data();
    g.bias = bias_.empty() ? nullptr : bias_.data();
    return g;
  }

 private:
  int n_ = 0, k_ = 0;
  detail::aligned_buffer<float> data_;
  std::vector<float> bias_;
};

namespace detail {
// Whether choose_packed_kernel() may pick the AVX2 sign-trick kernel for full weights of padded
// depth k4, read at pack time: only then are the panels' group schedules worth building (defined
// below).
inline bool sign_trick_may_run(int k4);

// int8_weights::narrow on one row of k weights, the definition (arch/avx2.hpp has the vector
// form): returns max|w|; over narrow_weight_limit, dst gets each w * limit / max|w| rounded half
// away from zero, in integers (else src is used as it is).
inline int narrow_row(const std::int8_t* src, int k, std::int8_t* dst) {
  int m = 0;
  for (int kk = 0; kk < k; ++kk) m = std::max(m, std::abs(static_cast<int>(src[kk])));
  if (m <= narrow_weight_limit) return m;
  for (int kk = 0; kk < k; ++kk) {
    const int w = src[kk], mag = (std::abs(w) * 2 * narrow_weight_limit + m) / (2 * m);
    dst[kk] = static_cast<std::int8_t>(w < 0 ? -mag : mag);
  }
  return m;
}
}  // namespace detail

// automatic as the active instruction set and CPU decide (int8_weights); full and narrow as they are.
inline int8_weights resolve_int8_weights(int8_weights w);

inline packed_int8 packed_int8::pack(const std::vector<part>& parts, int k, int8_weights weights) {
  const char* kernel = "packed_int8::pack";
  detail::check_size(kernel, "k", k);
  // |sum| <= k * 255 * 128 on the VNNI path must fit int32.
  if (k > 65536) detail::fail(kernel, "k = " + std::to_string(k) + " exceeds 65536");
  packed_int8 out;
  out.k_ = k;
  out.k4_ = (k + detail::k_group - 1) / detail::k_group * detail::k_group;
  if (out.k4_ == 0) out.k4_ = detail::k_group;
  bool any_bias = false, all_bias = true;
  for (const part& p : parts) {
    detail::check_matrix(kernel, "w", p.w, p.rows, k, p.ldw);
    detail::check_vector(kernel, "scales", p.scales, p.rows);
    out.n_ += p.rows;
    any_bias = any_bias || p.bias != nullptr;
    all_bias = all_bias && p.bias != nullptr;
  }
  if (any_bias && !all_bias) detail::fail(kernel, "either every part has a bias or none");
  out.narrow_ = resolve_int8_weights(weights) == int8_weights::narrow;
  out.panels_ = (out.n_ + detail::panel_width - 1) / detail::panel_width;
  const std::size_t padded = static_cast<std::size_t>(out.panels_) * detail::panel_width;
  out.data_ = detail::aligned_buffer<std::int8_t>(padded * static_cast<std::size_t>(out.k4_));
  out.comp_.assign(padded, 0);
  out.scales_.assign(padded, 0.0f);
  if (any_bias) out.bias_.assign(padded, 0.0f);
  // Every row's source first, then panel by panel: a full panel's whole k-groups go through the
  // AVX2 transpose where the CPU has it; a partial panel, K's last partial group and other CPUs
  // take 4-byte copies (packing is a large part of a file's load time).
#if TASKMOE_KERNELS_X86
  const bool avx2 = active_isa() >= isa::avx2;
  const bool schedule = !out.narrow_ && detail::sign_trick_may_run(out.k4_);
  const int groups = out.k4_ / detail::k_group;
  if (schedule) {
    out.group_order_.resize(static_cast<std::size_t>(out.panels_) * groups);
    out.paired_groups_.resize(static_cast<std::size_t>(out.panels_));
  }
#endif
  std::vector<const std::int8_t*> rows(padded, nullptr);
  int j = 0;
  for (const part& p : parts)
    for (int r = 0; r < p.rows; ++r, ++j) {
      const std::int8_t* src = p.w + static_cast<std::size_t>(r) * p.ldw;
      rows[static_cast<std::size_t>(j)] = src;
      out.scales_[static_cast<std::size_t>(j)] = p.scales[r] * p.multiplier;
      if (any_bias) out.bias_[static_cast<std::size_t>(j)] = p.bias[r] * p.multiplier;
    }
  constexpr int width = detail::panel_width, group = detail::k_group;
  const std::size_t pb = static_cast<std::size_t>(out.k4_) * width;
  const int whole = k / group;
  // Panels are independent: split over the caller's intra-op threads (a model's load).
  parallel_for(std::min(intra_op_threads(), out.panels_), out.panels_, [&](int first, int last) {
    std::vector<std::int8_t> narrowed(out.narrow_ ? static_cast<std::size_t>(width) * k : 0);
    const std::int8_t* narrow_rows[width] = {};
#if TASKMOE_KERNELS_X86
    std::vector<std::uint16_t> scratch;
#endif
    for (int panel = first; panel < last; ++panel) {
      std::int8_t* dst = out.data_.data() + static_cast<std::size_t>(panel) * pb;
      const std::int8_t* const* src = rows.data() + static_cast<std::size_t>(panel) * width;
      const int cols = std::min(width, out.n_ - panel * width);  // padding columns stay zero
      if (out.narrow_) {
        for (int c = 0; c < width; ++c) {
          narrow_rows[c] = src[c];
          if (c >= cols) continue;
          std::int8_t* row = narrowed.data() + static_cast<std::size_t>(c) * k;
#if TASKMOE_KERNELS_X86
          const int m = avx2 ? detail::avx2::narrow_row(src[c], k, row, narrow_weight_limit) : detail::narrow_row(src[c], k, row);
#else
          const int m = detail::narrow_row(src[c], k, row);
#endif
          if (m <= narrow_weight_limit) continue;
          narrow_rows[c] = row;
          out.scales_[static_cast<std::size_t>(panel) * width + c] *= static_cast<float>(m) / narrow_weight_limit;
        }
        src = narrow_rows;
      }
      int done = 0;  // whole groups packed
#if TASKMOE_KERNELS_X86
      if (avx2 && cols == width) {
        detail::avx2::pack_panel_int8(src, whole, dst);
        done = whole;
      }
#endif
      for (int g = done; g < whole; ++g)
        for (int c = 0; c < cols; ++c)
          std::memcpy(dst + static_cast<std::size_t>(g) * width * group + c * group, src[c] + g * group, group);
      for (int c = 0; c < cols; ++c)
        for (int kk = whole * group; kk < k; ++kk)
          dst[static_cast<std::size_t>(whole) * width * group + c * group + kk % group] = src[c][kk];
      // comp = 128 * column sums, from the packed panel (in cache; padding adds zeros).
      std::int32_t* comp = out.comp_.data() + static_cast<std::size_t>(panel) * width;
#if TASKMOE_KERNELS_X86
      if (avx2) detail::avx2::panel_column_sums(dst, out.k4_, comp);
      else
#endif
        for (std::size_t b = 0; b < pb; ++b) comp[b / group % width] += dst[b];
      for (int c = 0; c < width; ++c) comp[c] *= 128;
#if TASKMOE_KERNELS_X86
      if (schedule)
        out.paired_groups_[static_cast<std::size_t>(panel)] = static_cast<std::uint16_t>(detail::avx2::pair_groups(
            dst, groups, out.group_order_.data() + static_cast<std::size_t>(panel) * groups, scratch));
#endif
    }
  });
  return out;
}

// f32 weights [n, k] (ldw): quantized per row exactly as the converter does, then packed.
inline packed_int8 quantize_pack(const float* w, int n, int k, int ldw, const float* bias = nullptr,
                                 int8_weights weights = int8_weights::full) {
  const int ldq = k > 0 ? k : 1;
  std::vector<std::int8_t> q(static_cast<std::size_t>(n) * ldq);
  std::vector<float> scales(static_cast<std::size_t>(n));
  quantize_rows_int8(w, n, k, ldw, q.data(), ldq, scales.data());
  return packed_int8::pack({{q.data(), n, ldq, scales.data(), bias, 1.0f}}, k, weights);
}

// float16 weights [n, k] (ldw; a float16 embedding table): widened exactly a block of rows at a
// time (no float copy of the whole matrix), then as above.
inline packed_int8 quantize_pack(const std::uint16_t* w, int n, int k, int ldw, const float* bias = nullptr,
                                 int8_weights weights = int8_weights::full) {
  if (n < 0 || k < 0 || (n > 0 && (w == nullptr || ldw < k)))
    throw invalid_argument_error("taskmoe::kernels::quantize_pack: bad float16 matrix");
  const int ldq = k > 0 ? k : 1, block = 64, blocks = (n + block - 1) / block;
  std::vector<std::int8_t> q(static_cast<std::size_t>(n) * ldq);
  std::vector<float> scales(static_cast<std::size_t>(n));
  parallel_for(std::min(intra_op_threads(), blocks), blocks, [&](int b0, int b1) {  // as pack's panels
    std::vector<float> f(static_cast<std::size_t>(block) * ldq);
    for (int r0 = b0 * block; r0 < std::min(n, b1 * block); r0 += block) {
      const int rows = std::min(block, n - r0);
      for (int r = 0; r < rows; ++r)
        from_float16(w + static_cast<std::size_t>(r0 + r) * ldw, k, f.data() + static_cast<std::size_t>(r) * ldq);
      quantize_rows_int8(f.data(), rows, k, ldq, q.data() + static_cast<std::size_t>(r0) * ldq, ldq, scales.data() + r0);
    }
  });
  return packed_int8::pack({{q.data(), n, ldq, scales.data(), bias, 1.0f}}, k, weights);
}

struct packed_gemm_options {
  bool relu = false;        // fused max(0, .) after the bias
  bool accumulate = false;  // C += result (C is read) instead of C = result
  int threads = 0;          // split columns over this many pool threads; 0: intra_op_threads()
};

namespace detail {

// vnni: AVX-512 VNNI; amx: AMX tiles; avx_vnni: AVX-VNNI at AVX2 width; all three take
// activations shifted by +128, as avx2_narrow does (narrow weights) unless they are
// non-negative. avx2: the sign trick. avx2_pairs: Winograd's pair products
// (arch/avx2_pairs.hpp), activations as int16 pairs.
enum class packed_kernel { generic, avx2, avx2_narrow, avx2_pairs, avx_vnni, vnni, amx };

// Calls with fewer rows keep the sign-trick kernel: each panel's conversion to pairs is shared by
// the call's row tiles only. Zen 1, N = 2048, K = 512, one core, pairs against sign trick:
// non-negative activations (its best case) 0.85x at 4 rows, 0.95x at 6, 1.05x at 8, 1.13x at 12;
// signed ones 1.04x / 1.09x / 1.25x / 1.34x.
constexpr int int8_pairs_min_rows = 8;

// Calls with fewer rows keep the VNNI kernel: an AMX tile always multiplies 16 rows. Emerald
// Rapids, one core, AMX against VNNI through gemm_packed_int8 (N 2048 / 512 / 8000 / 1536, K 512
// / 2048): 0.61x-0.77x at 4 rows, 0.81x-1.0x at 5, 0.86x-1.1x at 6, 1.03x-1.35x at 8, 1.7x-2.2x at 16.
constexpr int int8_amx_min_rows = 8;

// Kernel choices that tests and benchmarks can force (the results are the same, only the speed
// differs): a scoped override (scoped_int8_kernel_override), else an environment variable, 0 or 1
// (read once; another value throws), else the CPU.
enum class int8_kernel_option { pairs, amx, avx_vnni };

inline std::atomic<int>& int8_option_slot(int8_kernel_option option) noexcept {
  static std::atomic<int> slots[3] = {{-1}, {-1}, {-1}};  // -1: no override; 0 / 1: off / on
  return slots[static_cast<int>(option)];
}

// An environment variable's 0 / 1 as 0 / 1; unset or empty -1; anything else -2.
inline int env_switch(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return -1;
  const std::string value(text);
  return value == "0" ? 0 : value == "1" ? 1 : -2;
}

inline bool int8_option_enabled(int8_kernel_option option, bool cpu_default) {
  const int forced = int8_option_slot(option).load(std::memory_order_relaxed);
  if (forced >= 0) return forced == 1;
  static const char* const names[3] = {"TASKMOE_INT8_PAIRS", "TASKMOE_INT8_AMX", "TASKMOE_INT8_AVXVNNI"};
  static const int env[3] = {env_switch(names[0]), env_switch(names[1]), env_switch(names[2])};
  const int value = env[static_cast<int>(option)];
  if (value == -2) throw invalid_argument_error(std::string(names[static_cast<int>(option)]) + " must be 0 or 1");
  return value >= 0 ? value == 1 : cpu_default;
}

// The kernel for a call of m rows and padded depth k4 at the active instruction set, on weights
// packed full or narrow.
inline packed_kernel choose_packed_kernel(int m, int k4, bool narrow = false) {
#if TASKMOE_KERNELS_X86
  const isa active = active_isa();
  const cpu_features& f = detect_cpu_features();
  if (active == isa::avx512 && f.avx512vnni) {
    // AMX where the OS granted it; forcing it on elsewhere changes nothing.
    const bool amx = int8_option_enabled(int8_kernel_option::amx, true) && f.amx_int8;
    return amx && m >= int8_amx_min_rows && amx::fits(k4) ? packed_kernel::amx : packed_kernel::vnni;
  }
  // Pair products: where the CPU has one vector-multiply pipe (no such CPU has AVX-VNNI: pairs
  // come first only when forced, for tests). The setting is read before the row count, so that a
  // bad TASKMOE_INT8_PAIRS fails at once.
  if (active >= isa::avx2 && int8_option_enabled(int8_kernel_option::pairs, f.one_multiply_pipe) &&
      m >= int8_pairs_min_rows)
    return packed_kernel::avx2_pairs;
  // AVX-VNNI where the CPU has it; off, the sign-trick kernel runs instead (how tests and
  // benchmarks reach it on such a CPU).
  if (active >= isa::avx2)
    return int8_option_enabled(int8_kernel_option::avx_vnni, true) && f.avxvnni ? packed_kernel::avx_vnni
           : narrow                                                             ? packed_kernel::avx2_narrow
                                                                                : packed_kernel::avx2;
#else
  static_cast<void>(m);
  static_cast<void>(k4);
  static_cast<void>(narrow);
#endif
  return packed_kernel::generic;
}

// Calls of 2 rows, the fewest the paired kernel takes, are also too few for AMX and the pair
// products: if the sign trick runs at all, it runs for them.
inline bool sign_trick_may_run(int k4) { return choose_packed_kernel(2, k4) == packed_kernel::avx2; }
}  // namespace detail

// Narrow by default where the narrow-weights kernel would run for calls of a few rows (the
// decoder's), on a CPU with more than one vector-multiply pipe: Zen 1's single pipe runs the
// sign trick's extra operation elsewhere, and it keeps full weights.
inline int8_weights resolve_int8_weights(int8_weights w) {
  if (w != int8_weights::automatic) return w;
#if TASKMOE_KERNELS_X86
  if (detail::choose_packed_kernel(2, detail::k_group, true) == detail::packed_kernel::avx2_narrow &&
      !detect_cpu_features().one_multiply_pipe)
    return int8_weights::narrow;
#endif
  return int8_weights::full;
}

namespace detail {

inline void run_packed(packed_kernel kind, const packed_call& g, int p0, int p1) {
  switch (kind) {
#if TASKMOE_KERNELS_X86
    case packed_kernel::vnni: avx512::gemm_packed(g, p0, p1); return;
    case packed_kernel::amx: amx::gemm_packed(g, p0, p1); return;
    case packed_kernel::avx_vnni: avxvnni::gemm_packed(g, p0, p1); return;
    case packed_kernel::avx2: avx2::gemm_packed(g, p0, p1); return;
    case packed_kernel::avx2_narrow: avx2::gemm_packed_narrow(g, p0, p1); return;
    case packed_kernel::avx2_pairs: avx2_pairs::gemm_packed(g, p0, p1); return;
#endif
    default: generic::gemm_packed(g, p0, p1); return;
  }
}

// Argument checks shared by the packed GEMMs; false: nothing to compute.
template <class Packed>
bool check_packed_gemm(const char* kernel, int m, const float* a, int lda, const Packed& w, const float* c,
                       int ldc, const packed_gemm_options& options) {
  check_size(kernel, "m", m);
  check_matrix(kernel, "a", a, m, w.cols(), lda);
  check_matrix(kernel, "c", c, m, w.rows(), ldc);
  if (options.threads < 0) fail(kernel, "options.threads must be >= 0");
  return m > 0 && w.rows() > 0;
}

// Runs f(p0, p1, i0, rows) over the call's tiles of work: column blocks of whole 4-panel tiles
// split over the threads, so splitting never changes a tile's shape or a result (each output is
// computed by one thread with the same operations); within them, rows in blocks whose
// activations (row_bytes each) take about 128 KiB, so that a block stays in L2 while every
// 64-column weight block streams over it (else an encoder's thousands of rows are re-read from L3
// for every 64 columns). But never fewer than 64 rows: each row block streams the whole weight
// matrix from L3, and with fewer rows that stream is the bottleneck (f32, K = 2048: 128 KiB is
// 16 rows, and the 4 MB of weights for every 12 rows ran at 2/3 of the speed of 64-row blocks).
// Blocks are a multiple of row_tile rows (the kernel's tile height: vector_row_tile, or AMX's 16),
// so only the call's last block ends in a partial tile.
constexpr int vector_row_tile = 12;  // covers the vector kernels' 6-, 4- and 2-row tiles
template <class F>
void for_each_packed_block(int m, int panels, std::size_t row_bytes, int row_tile, int threads, const F& f) {
  constexpr std::size_t block_bytes = 128 * 1024;
  constexpr int min_block_rows = 64;
  const std::size_t fit = std::max(block_bytes / (row_bytes > 0 ? row_bytes : 1),
                                   static_cast<std::size_t>((min_block_rows + row_tile - 1) / row_tile * row_tile));
  const int rows = fit >= static_cast<std::size_t>(m) ? m : static_cast<int>(fit) / row_tile * row_tile;
  const int blocks = (panels + 3) / 4;
  parallel_for(std::min(threads == 0 ? intra_op_threads() : threads, blocks), blocks, [&](int b0, int b1) {
    for (int i0 = 0; i0 < m; i0 += rows) f(4 * b0, std::min(panels, 4 * b1), i0, std::min(rows, m - i0));
  });
}

// True when no byte of q [n] is negative (a ReLU's output quantized): the AVX2 kernel then skips
// its sign trick. One OR over the activations, a small fraction of the GEMM that reads them.
inline bool all_nonnegative(const std::int8_t* q, std::size_t n) {
  unsigned bits = 0;
  for (std::size_t i = 0; i < n; ++i) bits |= static_cast<std::uint8_t>(q[i]);
  return (bits & 0x80u) == 0;
}

// Quantized activations for one call (and their int16 pairs for avx2_pairs): grown per thread,
// never shrunk.
struct packed_workspace {
  std::vector<std::uint8_t> q;
  std::vector<float> scales;
  std::vector<std::int32_t> pairs, pair_sums;
};
inline packed_workspace& packed_thread_workspace() {
  thread_local packed_workspace ws;
  return ws;
}

}  // namespace detail

// Forces an int8 kernel choice on or off for its lifetime (process-wide, nestable; tests and
// benchmarks: the results are the same, only the speed differs).
template <detail::int8_kernel_option Option>
class scoped_int8_kernel_override {
 public:
  explicit scoped_int8_kernel_override(bool on) : previous_(detail::int8_option_slot(Option).exchange(on ? 1 : 0)) {}
  ~scoped_int8_kernel_override() { detail::int8_option_slot(Option).store(previous_); }
  scoped_int8_kernel_override(const scoped_int8_kernel_override&) = delete;
  scoped_int8_kernel_override& operator=(const scoped_int8_kernel_override&) = delete;

 private:
  int previous_;
};
// The AVX2 path's pair products (TASKMOE_INT8_PAIRS); the AVX-512 path's AMX tiles where the CPU
// has them (TASKMOE_INT8_AMX); the AVX2 path's AVX-VNNI kernel where the CPU has it
// (TASKMOE_INT8_AVXVNNI; off: the sign-trick kernel of CPUs without it).
using scoped_int8_pairs_override = scoped_int8_kernel_override<detail::int8_kernel_option::pairs>;
using scoped_int8_amx_override = scoped_int8_kernel_override<detail::int8_kernel_option::amx>;
using scoped_int8_avxvnni_override = scoped_int8_kernel_override<detail::int8_kernel_option::avx_vnni>;

// c [m, rows] (ldc) = act(a [m, cols] (lda) Wᵀ) (+ c); see packed_gemm_options.
inline void gemm_packed_int8(int m, const float* a, int lda, const packed_int8& w, float* c, int ldc,
                             const packed_gemm_options& options = {}) {
  if (!detail::check_packed_gemm("gemm_packed_int8", m, a, lda, w, c, ldc, options)) return;
  const int k = w.cols(), k4 = packed_access::k4(w);
  detail::packed_workspace& ws = detail::packed_thread_workspace();
  ws.q.resize(static_cast<std::size_t>(m) * k4);
  ws.scales.resize(static_cast<std::size_t>(m));
  auto* q = reinterpret_cast<std::int8_t*>(ws.q.data());
  quantize_rows_int8(a, m, k, lda, q, k4, ws.scales.data());
  const detail::packed_kernel kind = detail::choose_packed_kernel(m, k4, packed_access::narrow(w));
  for (int i = 0; i < m; ++i) {
    std::uint8_t* row = ws.q.data() + static_cast<std::size_t>(i) * k4;
    if (k4 > k) std::memset(row + k, 0, static_cast<std::size_t>(k4 - k));
  }
  // The AVX2 kernels take ReLU outputs as unsigned bytes as they are; the narrow one shifts the
  // others as the VNNI kernels do.
  const bool avx2 = kind == detail::packed_kernel::avx2 || kind == detail::packed_kernel::avx2_narrow;
  const bool nonnegative = avx2 && detail::all_nonnegative(q, static_cast<std::size_t>(m) * k4);
#if TASKMOE_KERNELS_X86
  if (kind == detail::packed_kernel::vnni || kind == detail::packed_kernel::amx || kind == detail::packed_kernel::avx_vnni ||
      (kind == detail::packed_kernel::avx2_narrow && !nonnegative))
    for (int i = 0; i < m; ++i) detail::avx2::flip_sign_bits(ws.q.data() + static_cast<std::size_t>(i) * k4, k4);
#endif
  detail::packed_call g = packed_access::call(w);
  g.a = ws.q.data();
  g.lda = k4;
  g.a_scales = ws.scales.data();
  g.c = c;
  g.ldc = ldc;
  g.relu = options.relu;
  g.accumulate = options.accumulate;
  g.a_nonnegative = nonnegative;
  std::size_t row_bytes = static_cast<std::size_t>(k4);
  int row_tile = detail::vector_row_tile;
#if TASKMOE_KERNELS_X86
  if (kind == detail::packed_kernel::amx) row_tile = detail::amx::tile_rows;
  if (kind == detail::packed_kernel::avx2_pairs) {
    ws.pairs.resize(static_cast<std::size_t>(m) * (k4 / 2));
    ws.pair_sums.resize(static_cast<std::size_t>(m));
    detail::avx2_pairs::expand_rows(q, m, k4, k4, ws.pairs.data(), k4 / 2, ws.pair_sums.data());
    g.a_pairs = ws.pairs.data();
    g.ld_pairs = k4 / 2;
    g.a_pair_sums = ws.pair_sums.data();
    row_bytes *= 2;
  }
#endif
  detail::for_each_packed_block(m, w.panels(), row_bytes, row_tile, options.threads,
                                [&](int p0, int p1, int i0, int rows) {
                                  detail::packed_call gi = g;
                                  gi.m = rows;
                                  gi.a += static_cast<std::size_t>(i0) * g.lda;
                                  gi.a_scales += i0;
                                  if (g.a_pairs != nullptr) {
                                    gi.a_pairs += static_cast<std::size_t>(i0) * g.ld_pairs;
                                    gi.a_pair_sums += i0;
                                  }
                                  gi.c += static_cast<std::size_t>(i0) * g.ldc;
                                  detail::run_packed(kind, gi, p0, p1);
                                });
}

// c [m, rows] (ldc) = act(a [m, cols] (lda) Wᵀ + bias) (+ c); see packed_gemm_options.
inline void gemm_packed_f32(int m, const float* a, int lda, const packed_f32& w, float* c, int ldc,
                            const packed_gemm_options& options = {}) {
  if (!detail::check_packed_gemm("gemm_packed_f32", m, a, lda, w, c, ldc, options)) return;
  detail::packed_f32_call g = w.call();
  g.a = a;
  g.lda = lda;
  g.c = c;
  g.ldc = ldc;
  g.relu = options.relu;
  g.accumulate = options.accumulate;
#if TASKMOE_KERNELS_X86
  const isa active = active_isa();
#endif
  detail::for_each_packed_block(m, w.panels(), static_cast<std::size_t>(w.cols()) * sizeof(float), detail::vector_row_tile, options.threads,
                                [&](int p0, int p1, int i0, int rows) {
                                  detail::packed_f32_call gi = g;
                                  gi.m = rows;
                                  gi.a += static_cast<std::size_t>(i0) * g.lda;
                                  gi.c += static_cast<std::size_t>(i0) * g.ldc;
#if TASKMOE_KERNELS_X86
                                  if (active == isa::avx512) return detail::avx512::gemm_packed_f32(gi, p0, p1);
                                  if (active == isa::avx2) return detail::avx2::gemm_packed_f32(gi, p0, p1);
#endif
                                  detail::generic::gemm_packed_f32(gi, p0, p1);
                                });
}

}  // namespace kernels
}  // namespace taskmoe
