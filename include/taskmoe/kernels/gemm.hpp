#pragma once
// Matrix products for Linear layers: C = alpha * A W^T + beta * C (+ bias), where W is a weight
// matrix stored [N, K] row-major exactly as in the model files (PyTorch Linear: weight [out, in]),
// A is [M, K] (M = tokens in flight, 1 ... ~2000) and C is [M, N]. All matrices row-major with a
// leading dimension (ld >= columns), so callers can work on slices (one head, one expert's rows).
//
//   gemm_f32           f32 weights. oneDNN matmul when TASKMOE_HAS_ONEDNN, else Eigen.
//   quantize_rows_int8 symmetric per-row int8 quantization (weights at conversion time,
//                      activations per token at run time).
//   gemm_int8          f32 activations x int8 weights with per-row scales: quantizes A per row,
//                      then gemm_s8 below.
//   gemm_s8            pre-quantized activations (quantize once, reuse for Q, K and V).
//   gemm_s8s8_s32      the exact integer product, for tests and custom epilogues.
//
// int8 math: C[i, j] = (sum_p qa[i, p] qw[j, p]) * sa[i] * sw[j] + bias[j]. The integer sum is
// exact on every backend; only the final float scaling rounds.
//
// Every call runs on the calling thread with options.threads threads (default 1; see
// detail/onednn.hpp) and throws invalid_argument_error on bad sizes, strides or null pointers.

#include <cstddef>  // std::size_t
#include <cstdint>  // int8_t, int32_t
#include <vector>   // std::vector (per-thread activation workspace)

#include <Eigen/Core>  // the fallback f32 GEMM

#include <taskmoe/config.hpp>                 // TASKMOE_HAS_ONEDNN
#include <taskmoe/kernels/arch/avx2.hpp>      // detail::avx2::gemm_s8s8
#include <taskmoe/kernels/arch/avx512.hpp>    // detail::avx512::gemm_s8s8
#include <taskmoe/kernels/arch/generic.hpp>   // detail::generic::gemm_s8s8, quantize_row_int8
#include <taskmoe/kernels/detail/args.hpp>    // argument checks
#include <taskmoe/kernels/detail/onednn.hpp>  // oneDNN matmul wrappers
#include <taskmoe/kernels/isa.hpp>            // active_isa

namespace taskmoe {
namespace kernels {

enum class gemm_backend {
  automatic,  // the measured-fastest available backend for the shape (docs/kernels.md)
  onednn,     // oneDNN matmul (f32 and int8); throws if built without oneDNN
  eigen,      // Eigen (f32 only): the portable fallback
  native,     // taskmoe's own ISA-dispatched kernels (int8 only): generic / AVX2 / AVX-512 VNNI
};

inline const char* to_string(gemm_backend b) noexcept {
  switch (b) {
    case gemm_backend::automatic: return "automatic";
    case gemm_backend::onednn: return "onednn";
    case gemm_backend::eigen: return "eigen";
    case gemm_backend::native: return "native";
  }
  return "unknown";
}

// Is `b` compiled in and usable for this element type?
inline bool gemm_backend_available(gemm_backend b, bool int8) noexcept {
  switch (b) {
    case gemm_backend::automatic: return true;
    case gemm_backend::onednn: return TASKMOE_HAS_ONEDNN != 0;
    case gemm_backend::eigen: return !int8;
    case gemm_backend::native: return int8;
  }
  return false;
}

struct gemm_options {
  gemm_backend backend = gemm_backend::automatic;
  int threads = 1;  // threads one call may use (oneDNN only; the other backends use 1)
};

namespace detail {

inline void check_options(const char* kernel, const gemm_options& o, bool int8) {
  if (o.threads < 1) fail(kernel, "options.threads must be >= 1");
  if (!gemm_backend_available(o.backend, int8)) {
    fail(kernel, std::string("backend '") + to_string(o.backend) + "' is not available for " +
                     (int8 ? "int8" : "f32") +
                     (o.backend == gemm_backend::onednn ? " (built without oneDNN)" : ""));
  }
}

inline void check_gemm(const char* kernel, int m, int n, int k, const void* a, int lda,
                       const void* w, int ldw, const void* c, int ldc) {
  check_size(kernel, "m", m);
  check_size(kernel, "n", n);
  check_size(kernel, "k", k);
  check_matrix(kernel, "a", a, m, k, lda);
  check_matrix(kernel, "w", w, n, k, ldw);
  check_matrix(kernel, "c", c, m, n, ldc);
}

template <class M>
using strided_map = Eigen::Map<M, Eigen::Unaligned, Eigen::OuterStride<>>;
using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

inline void eigen_gemm_f32(int m, int n, int k, float alpha, const float* a, int lda, const float* w,
                           int ldw, float beta, float* c, int ldc, const float* bias) {
  const strided_map<const row_major> A(a, m, k, Eigen::OuterStride<>(lda));
  const strided_map<const row_major> W(w, n, k, Eigen::OuterStride<>(ldw));
  strided_map<row_major> C(c, m, n, Eigen::OuterStride<>(ldc));
  if (beta == 0.0f) {
    C.noalias() = alpha * (A * W.transpose());  // C is not read: it may hold garbage or NaN
  } else {
    if (beta != 1.0f) C *= beta;
    C.noalias() += alpha * (A * W.transpose());
  }
  if (bias != nullptr) {
    C.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bias, n);
  }
}

// ep(i, j, int32) with the ISA chosen at run time. The AVX-512 kernel needs VNNI; without it the
// AVX2 kernel runs (every AVX-512 CPU has AVX2).
template <class Epilogue>
void native_gemm_s8s8(int m, int n, int k, const std::int8_t* a, int lda, const std::int8_t* w,
                      int ldw, const Epilogue& ep) {
  switch (active_isa()) {
#if TASKMOE_KERNELS_X86
    case isa::avx512:
      if (detect_cpu_features().avx512vnni) {
        avx512::gemm_s8s8(m, n, k, a, lda, w, ldw, ep);
        return;
      }
      avx2::gemm_s8s8(m, n, k, a, lda, w, ldw, ep);
      return;
    case isa::avx2:
      avx2::gemm_s8s8(m, n, k, a, lda, w, ldw, ep);
      return;
#endif
    default:
      generic::gemm_s8s8(m, n, k, a, lda, w, ldw, ep);
      return;
  }
}

struct scale_epilogue {
  float* c;
  int ldc;
  const float* a_scales;
  const float* w_scales;
  const float* bias;
  void operator()(int i, int j, std::int32_t v) const {
    float r = static_cast<float>(v) * (a_scales[i] * w_scales[j]);
    if (bias != nullptr) r += bias[j];
    c[static_cast<std::size_t>(i) * ldc + j] = r;
  }
};

struct s32_epilogue {
  std::int32_t* c;
  int ldc;
  void operator()(int i, int j, std::int32_t v) const { c[static_cast<std::size_t>(i) * ldc + j] = v; }
};

// The int8 backend `automatic` picks: always the native kernel (measurements in docs/kernels.md).
// On this AVX2 machine it is 2-30x faster than oneDNN 2.6's int8 matmul at M <= 16 (oneDNN repacks
// the plain-layout weights on every call), and oneDNN's AVX2 int8 path is not exact: it computes
// u8 x s8 with vpmaddubsw, whose int16 pair sums saturate for full 8-bit weights (the tests show
// errors of several percent; with 7-bit weights it is exact). oneDNN stays available on request.
inline bool int8_prefers_onednn(int m, int n, int k) {
  (void)m;
  (void)n;
  (void)k;
  return false;
}

// Per-thread activation buffers for gemm_int8: grown, never shrunk, so steady-state decoding
// allocates nothing.
struct int8_workspace {
  std::vector<std::int8_t> q;
  std::vector<float> scales;
};
inline int8_workspace& thread_workspace() {
  thread_local int8_workspace ws;
  return ws;
}

}  // namespace detail

// C = alpha * A W^T + beta * C, then C[i, :] += bias when bias != nullptr.
// a [m, k] (lda), w [n, k] (ldw), c [m, n] (ldc), bias [n] or null. beta == 0: C is write-only.
inline void gemm_f32(int m, int n, int k, float alpha, const float* a, int lda, const float* w,
                     int ldw, float beta, float* c, int ldc, const float* bias = nullptr,
                     const gemm_options& options = {}) {
  const char* kernel = "gemm_f32";
  detail::check_options(kernel, options, false);
  detail::check_gemm(kernel, m, n, k, a, lda, w, ldw, c, ldc);
  if (m == 0 || n == 0) return;
#if TASKMOE_HAS_ONEDNN
  if (options.backend != gemm_backend::eigen && k > 0) {
    detail::onednn::gemm_f32(m, n, k, alpha, a, lda, w, ldw, beta, c, ldc, bias, options.threads);
    return;
  }
#endif
  detail::eigen_gemm_f32(m, n, k, alpha, a, lda, w, ldw, beta, c, ldc, bias);
}

// Quantizes each row of x [rows, cols] (ldx) to q [rows, cols] (ldq) with scale[r] = max|x_r|/127
// (0 for an all-zero row). Throws on non-finite values.
inline void quantize_rows_int8(const float* x, int rows, int cols, int ldx, std::int8_t* q, int ldq,
                               float* scales) {
  const char* kernel = "quantize_rows_int8";
  detail::check_matrix(kernel, "x", x, rows, cols, ldx);
  detail::check_matrix(kernel, "q", q, rows, cols, ldq);
  detail::check_vector(kernel, "scales", scales, rows);
#if TASKMOE_KERNELS_X86
  const isa active = rows > 0 ? active_isa() : isa::generic;
  if (active >= isa::avx2) {
    const auto row = active == isa::avx512 ? detail::avx512::quantize_row_int8 : detail::avx2::quantize_row_int8;
    for (int r = 0; r < rows; ++r)
      if (!row(x + static_cast<std::size_t>(r) * ldx, cols, q + static_cast<std::size_t>(r) * ldq, scales + r))
        throw invalid_argument_error("taskmoe::kernels::quantize_rows_int8: non-finite value");
    return;
  }
#endif
  for (int r = 0; r < rows; ++r) {
    detail::generic::quantize_row_int8(x + static_cast<std::size_t>(r) * ldx, cols,
                                       q + static_cast<std::size_t>(r) * ldq, scales + r);
  }
}

// Contiguous form, as used by the model converter: w [rows, cols] -> q [rows, cols], scales [rows].
inline void quantize_rows_int8(const float* w, int rows, int cols, std::int8_t* q, float* scales) {
  const int ld = cols > 0 ? cols : 1;
  quantize_rows_int8(w, rows, cols, ld, q, ld, scales);
}

// C[i, j] = sum_p a[i, p] w[j, p], exact, with the native kernels of the active ISA.
inline void gemm_s8s8_s32(int m, int n, int k, const std::int8_t* a, int lda, const std::int8_t* w,
                          int ldw, std::int32_t* c, int ldc) {
  detail::check_gemm("gemm_s8s8_s32", m, n, k, a, lda, w, ldw, c, ldc);
  detail::native_gemm_s8s8(m, n, k, a, lda, w, ldw, detail::s32_epilogue{c, ldc});
}

// Pre-quantized activations: C[i, j] = (qa_i . qw_j) * a_scales[i] * w_scales[j] + bias[j].
// qa [m, k] (lda) must come from quantize_rows_int8 (values in [-127, 127]).
inline void gemm_s8(int m, int n, int k, const std::int8_t* qa, int lda, const float* a_scales,
                    const std::int8_t* qw, int ldw, const float* w_scales, float* c, int ldc,
                    const float* bias = nullptr, const gemm_options& options = {}) {
  const char* kernel = "gemm_s8";
  detail::check_options(kernel, options, true);
  detail::check_gemm(kernel, m, n, k, qa, lda, qw, ldw, c, ldc);
  detail::check_vector(kernel, "a_scales", a_scales, m);
  detail::check_vector(kernel, "w_scales", w_scales, n);
  if (m == 0 || n == 0) return;
  bool use_onednn = options.backend == gemm_backend::onednn ||
                    (options.backend == gemm_backend::automatic && detail::int8_prefers_onednn(m, n, k));
  if (k == 0) use_onednn = false;
#if TASKMOE_HAS_ONEDNN
  if (use_onednn) {
    detail::onednn::gemm_s8s8_f32(m, n, k, qa, lda, qw, ldw, w_scales, c, ldc, options.threads);
    for (int i = 0; i < m; ++i) {
      float* row = c + static_cast<std::size_t>(i) * ldc;
      const float s = a_scales[i];
      for (int j = 0; j < n; ++j) row[j] *= s;
      if (bias != nullptr) detail::generic::add_inplace(row, bias, n);
    }
    return;
  }
#else
  (void)use_onednn;
#endif
  detail::native_gemm_s8s8(m, n, k, qa, lda, qw, ldw,
                           detail::scale_epilogue{c, ldc, a_scales, w_scales, bias});
}

// f32 activations a [m, k] (lda) x int8 weights w [n, k] (ldw) with per-row scales w_scales [n]:
// quantizes a per row into a per-thread workspace, then gemm_s8.
inline void gemm_int8(int m, int n, int k, const float* a, int lda, const std::int8_t* w, int ldw,
                      const float* w_scales, float* c, int ldc, const float* bias = nullptr,
                      const gemm_options& options = {}) {
  const char* kernel = "gemm_int8";
  detail::check_options(kernel, options, true);
  detail::check_gemm(kernel, m, n, k, a, lda, w, ldw, c, ldc);
  detail::check_vector(kernel, "w_scales", w_scales, n);
  if (m == 0 || n == 0) return;
  detail::int8_workspace& ws = detail::thread_workspace();
  const int ldq = k > 0 ? k : 1;
  ws.q.resize(static_cast<std::size_t>(m) * ldq);
  ws.scales.resize(static_cast<std::size_t>(m));
  quantize_rows_int8(a, m, k, lda, ws.q.data(), ldq, ws.scales.data());
  gemm_s8(m, n, k, ws.q.data(), ldq, ws.scales.data(), w, ldw, w_scales, c, ldc, bias, options);
}

}  // namespace kernels
}  // namespace taskmoe
