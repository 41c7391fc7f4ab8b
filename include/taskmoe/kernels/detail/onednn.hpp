#pragma once
// oneDNN plumbing for kernels/gemm.hpp: one CPU engine, a stream per thread, primitive caches,
// and thread-count control. Only meaningful when TASKMOE_HAS_ONEDNN is 1 (the build links
// libdnnl); otherwise this header is empty.
//
// Why cache: creating a matmul primitive costs tens of microseconds to milliseconds (JIT code
// generation), more than a whole decoding-step GEMM. The caches key on everything that is fixed
// per weight matrix (N, K, weight stride, bias/beta/alpha flags, thread count); M and the
// activation/output strides are runtime dimensions (DNNL_RUNTIME_DIM_VAL), so one primitive serves
// every batch size and the cache stays as small as the number of distinct layer shapes.
//
// Why threads: Debian's libdnnl uses OpenMP, which by default spreads every call over all cores.
// The runtime parallelises across sentences instead, so each call here runs with exactly
// gemm_options::threads OpenMP threads (default 1) by setting the calling thread's OpenMP
// nthreads ICV around the call and restoring it afterwards. omp_* are looked up with dlsym so
// that neither we nor our users have to link libgomp explicitly; when oneDNN is built with
// another runtime they are absent and the thread count is left to that runtime.

#include <taskmoe/config.hpp>  // TASKMOE_HAS_ONEDNN

#if TASKMOE_HAS_ONEDNN

#include <dlfcn.h>  // dlsym, RTLD_DEFAULT

#include <cstdint>        // int64_t, uint32_t
#include <cstring>        // std::memcpy
#include <functional>     // std::hash
#include <memory>         // std::shared_ptr
#include <mutex>          // std::mutex, std::lock_guard
#include <unordered_map>  // std::unordered_map

#include <oneapi/dnnl/dnnl.hpp>  // dnnl::matmul, dnnl::memory, dnnl::engine, dnnl::stream

namespace taskmoe {
namespace kernels {
namespace detail {
namespace onednn {

inline dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

inline dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

struct omp_api {
  int (*get_max_threads)() = nullptr;
  void (*set_num_threads)(int) = nullptr;
};

inline const omp_api& omp() {
  static const omp_api api = [] {
    omp_api a;
    a.get_max_threads = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    a.set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    if (a.get_max_threads == nullptr || a.set_num_threads == nullptr) a = omp_api{};
    return a;
  }();
  return api;
}

// Sets the calling thread's OpenMP thread count for its lifetime (see the top of the file).
class thread_scope {
 public:
  explicit thread_scope(int threads) {
    const omp_api& api = omp();
    if (api.set_num_threads == nullptr) return;
    previous_ = api.get_max_threads();
    if (previous_ != threads) api.set_num_threads(threads);
  }
  ~thread_scope() {
    const omp_api& api = omp();
    if (api.set_num_threads != nullptr && previous_ > 0) api.set_num_threads(previous_);
  }
  thread_scope(const thread_scope&) = delete;
  thread_scope& operator=(const thread_scope&) = delete;

 private:
  int previous_ = 0;
};

struct key {
  int kind;  // 0: f32, 1: s8s8 -> f32 with per-column output scales
  int n, k, ldw;
  int has_bias, has_alpha;
  std::uint32_t beta_bits;  // the sum post-op's scale is fixed at creation
  int threads;
  bool operator==(const key& o) const {
    return kind == o.kind && n == o.n && k == o.k && ldw == o.ldw && has_bias == o.has_bias &&
           has_alpha == o.has_alpha && beta_bits == o.beta_bits && threads == o.threads;
  }
};

struct key_hash {
  std::size_t operator()(const key& x) const noexcept {
    std::size_t h = 0;
    for (long long v : {static_cast<long long>(x.kind), static_cast<long long>(x.n),
                        static_cast<long long>(x.k), static_cast<long long>(x.ldw),
                        static_cast<long long>(x.has_bias), static_cast<long long>(x.has_alpha),
                        static_cast<long long>(x.beta_bits), static_cast<long long>(x.threads)}) {
      h = h * 1000003u ^ std::hash<long long>()(v);
    }
    return h;
  }
};

using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;
constexpr dnnl::memory::dim runtime = DNNL_RUNTIME_DIM_VAL;

// Weights [N, K] row-major with stride ldw are, for oneDNN, a K x N matrix with strides {1, ldw}:
// no copy, no reorder of the caller's (possibly memory-mapped) weights.
inline dnnl::memory::desc weights_desc(dt type, int n, int k, int ldw) {
  return dnnl::memory::desc(dims{k, n}, type, dims{1, ldw});
}

inline std::shared_ptr<dnnl::matmul> create(const key& kk) {
  const dt src_type = kk.kind == 0 ? dt::f32 : dt::s8;
  const dnnl::memory::desc src(dims{runtime, kk.k}, src_type, dims{runtime, 1});
  const dnnl::memory::desc wei = weights_desc(src_type, kk.n, kk.k, kk.ldw);
  const dnnl::memory::desc dst(dims{runtime, kk.n}, dt::f32, dims{runtime, 1});
  dnnl::primitive_attr attr;
  if (kk.kind == 1) {
    attr.set_output_scales(1 << 1, {DNNL_RUNTIME_F32_VAL});  // per output column (weight row)
  } else if (kk.has_alpha) {
    attr.set_output_scales(0, {DNNL_RUNTIME_F32_VAL});
  }
  float beta = 0.0f;
  std::memcpy(&beta, &kk.beta_bits, sizeof beta);
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  dnnl::matmul::desc desc = kk.has_bias
      ? dnnl::matmul::desc(src, wei, dnnl::memory::desc(dims{1, kk.n}, dt::f32, dims{kk.n, 1}), dst)
      : dnnl::matmul::desc(src, wei, dst);
  return std::make_shared<dnnl::matmul>(dnnl::matmul::primitive_desc(desc, attr, engine()));
}

// The cached primitive for kk, created on first use. Thread-safe; primitives themselves may be
// executed from several threads at once.
inline std::shared_ptr<dnnl::matmul> primitive(const key& kk) {
  static std::mutex mutex;
  static std::unordered_map<key, std::shared_ptr<dnnl::matmul>, key_hash> cache;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(kk);
    if (it != cache.end()) return it->second;
  }
  std::shared_ptr<dnnl::matmul> created = create(kk);  // slow; outside the lock
  std::lock_guard<std::mutex> lock(mutex);
  return cache.emplace(kk, std::move(created)).first->second;
}

inline dnnl::memory wrap(dt type, int rows, int cols, int ld, const void* ptr) {
  return dnnl::memory(dnnl::memory::desc(dims{rows, cols}, type, dims{ld, 1}), engine(),
                      const_cast<void*>(ptr));
}

// C = alpha * A W^T (+ bias) + beta * C, f32.
inline void gemm_f32(int m, int n, int k, float alpha, const float* a, int lda, const float* w,
                     int ldw, float beta, float* c, int ldc, const float* bias, int threads) {
  thread_scope scope(threads);
  key kk{0, n, k, ldw, bias != nullptr, alpha != 1.0f, 0, threads};
  std::memcpy(&kk.beta_bits, &beta, sizeof beta);
  if (beta == 0.0f) kk.beta_bits = 0;  // -0.0f and 0.0f: same primitive
  const std::shared_ptr<dnnl::matmul> prim = primitive(kk);
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, wrap(dt::f32, m, k, lda, a)},
      {DNNL_ARG_WEIGHTS, dnnl::memory(weights_desc(dt::f32, n, k, ldw), engine(), const_cast<float*>(w))},
      {DNNL_ARG_DST, wrap(dt::f32, m, n, ldc, c)}};
  if (bias != nullptr) args.emplace(DNNL_ARG_BIAS, wrap(dt::f32, 1, n, n, bias));
  if (alpha != 1.0f) {
    args.emplace(DNNL_ARG_ATTR_OUTPUT_SCALES,
                 dnnl::memory(dnnl::memory::desc(dims{1}, dt::f32, dims{1}), engine(), &alpha));
  }
  prim->execute(stream(), args);
  stream().wait();
}

// C[i, j] = (sum_p a[i, p] w[j, p]) * w_scales[j], int8 inputs, f32 output. The per-row activation
// scale and the bias are applied by the caller (oneDNN 2.x output scales cannot vary along M).
inline void gemm_s8s8_f32(int m, int n, int k, const std::int8_t* a, int lda, const std::int8_t* w,
                          int ldw, const float* w_scales, float* c, int ldc, int threads) {
  thread_scope scope(threads);
  const key kk{1, n, k, ldw, 0, 0, 0, threads};
  const std::shared_ptr<dnnl::matmul> prim = primitive(kk);
  prim->execute(stream(),
                {{DNNL_ARG_SRC, wrap(dt::s8, m, k, lda, a)},
                 {DNNL_ARG_WEIGHTS, dnnl::memory(weights_desc(dt::s8, n, k, ldw), engine(),
                                                 const_cast<std::int8_t*>(w))},
                 {DNNL_ARG_DST, wrap(dt::f32, m, n, ldc, c)},
                 {DNNL_ARG_ATTR_OUTPUT_SCALES,
                  dnnl::memory(dnnl::memory::desc(dims{n}, dt::f32, dims{1}), engine(),
                               const_cast<float*>(w_scales))}});
  stream().wait();
}

}  // namespace onednn
}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe

#endif  // TASKMOE_HAS_ONEDNN
