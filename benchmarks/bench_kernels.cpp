// GEMM throughput at the runtime's shapes: f32 (oneDNN / Eigen / packed per ISA) and int8 (oneDNN /
// native per ISA), GFLOP/s as the median of repeated timings, plus the machine's measured peak (oneDNN sgemm
// and s8 matmul at 2048^3). One thread per call, as the runtime uses them.
//   usage: bench_kernels [--quick]      (pin it: taskset -c 1 bench_kernels)

#include <algorithm>  // std::sort, std::min
#include <chrono>     // std::chrono::steady_clock
#include <cstdint>    // int8_t
#include <cstdio>     // std::printf
#include <fstream>    // std::ifstream (/proc/cpuinfo)
#include <functional> // std::function
#include <random>     // std::mt19937
#include <string>     // std::string, std::getline
#include <vector>     // std::vector

#include <taskmoe/kernels/kernels.hpp>
#include <taskmoe/kernels/packed_gemm.hpp>

namespace tk = taskmoe::kernels;

namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

// Median seconds per call over `reps` timings, each long enough (>= ~20 ms) to dwarf timer noise.
double median_seconds(const std::function<void()>& f, int reps) {
  f();  // warm-up: primitive creation, caches
  int inner = 1;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < inner; ++i) f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0.02 || inner > (1 << 20)) break;
    inner *= 2;
  }
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < inner; ++i) f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / inner);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct problem {
  int m, n, k;
  std::vector<float> a, w, c, bias, ws;
  std::vector<std::int8_t> qw;
  problem(int m_, int n_, int k_) : m(m_), n(n_), k(k_) {
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    a.resize(static_cast<std::size_t>(m) * k);
    w.resize(static_cast<std::size_t>(n) * k);
    for (float& x : a) x = d(rng);
    for (float& x : w) x = d(rng);
    c.resize(static_cast<std::size_t>(m) * n);
    bias.assign(n, 0.5f);
    qw.resize(w.size());
    ws.resize(n);
    tk::quantize_rows_int8(w.data(), n, k, qw.data(), ws.data());
    packed = tk::packed_int8::pack({{qw.data(), n, k, ws.data(), bias.data(), 1.0f}}, k);
    packed_float = tk::packed_f32::pack({{w.data(), n, k, bias.data()}}, k);
  }
  tk::packed_int8 packed;
  tk::packed_f32 packed_float;
  double gflops(double seconds) const { return 2.0 * m * n * k / seconds * 1e-9; }
  void f32(tk::gemm_backend b) {
    tk::gemm_f32(m, n, k, 1.0f, a.data(), k, w.data(), k, 0.0f, c.data(), n, bias.data(), {b, 1});
  }
  // The runtime's int8 path: weights packed at load (kernels/packed_gemm.hpp), one thread.
  // The runtime's f32 path: weights packed at load, one thread.
  void packed_f32() { tk::gemm_packed_f32(m, a.data(), k, packed_float, c.data(), n, {false, false, 1}); }
  void packed_i8() { tk::gemm_packed_int8(m, a.data(), k, packed, c.data(), n, {false, false, 1}); }
  void i8(tk::gemm_backend b) {
    tk::gemm_int8(m, n, k, a.data(), k, qw.data(), k, ws.data(), c.data(), n, bias.data(), {b, 1});
  }
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const int reps = quick ? 3 : 7;
  const bool onednn = tk::gemm_backend_available(tk::gemm_backend::onednn, false);
  std::printf("machine: %s | best ISA %s, active %s | avx512vnni %d | oneDNN %s | 1 thread per call\n",
              cpu_model().c_str(), tk::to_string(tk::best_supported_isa()), tk::to_string(tk::active_isa()),
              int(tk::detect_cpu_features().avx512vnni), onednn ? "yes" : "no");

  if (onednn) {
    problem big(2048, 2048, 2048);
    const double f = big.gflops(median_seconds([&] { big.f32(tk::gemm_backend::onednn); }, 3));
    const double i = big.gflops(median_seconds([&] { big.i8(tk::gemm_backend::onednn); }, 3));
    std::printf("peak (2048^3): oneDNN sgemm %.1f GFLOP/s, oneDNN int8 %.1f GOP/s\n", f, i);
  }

  std::printf("\n%6s %6s %6s | %9s %9s | %9s %9s | per ISA, GOP/s: int8 native (row-major) / int8 packed / f32 packed\n", "M",
              "N", "K", "f32 dnnl", "f32 eigen", "i8 dnnl", "i8 native");
  const int shapes[][2] = {{512, 512}, {2048, 512}, {512, 2048}, {8000, 512}, {32000, 512}};
  for (int m : {1, 16, 64, 256}) {
    for (const auto& s : shapes) {
      problem p(m, s[0], s[1]);
      const double fd = onednn ? p.gflops(median_seconds([&] { p.f32(tk::gemm_backend::onednn); }, reps)) : 0;
      const double fe = p.gflops(median_seconds([&] { p.f32(tk::gemm_backend::eigen); }, reps));
      const double id = onednn ? p.gflops(median_seconds([&] { p.i8(tk::gemm_backend::onednn); }, reps)) : 0;
      const double in = p.gflops(median_seconds([&] { p.i8(tk::gemm_backend::native); }, reps));
      std::printf("%6d %6d %6d | %9.1f %9.1f | %9.1f %9.1f |", m, s[0], s[1], fd, fe, id, in);
      for (tk::isa isa : {tk::isa::generic, tk::isa::avx2, tk::isa::avx512}) {
        if (!tk::cpu_supports(isa) || (quick && isa == tk::isa::generic && m > 16)) continue;
        tk::scoped_isa_override force(isa);
        const double native = p.gflops(median_seconds([&] { p.i8(tk::gemm_backend::native); }, reps));
        const double packed = p.gflops(median_seconds([&] { p.packed_i8(); }, reps));
        const double packed_f = p.gflops(median_seconds([&] { p.packed_f32(); }, reps));
        std::printf(" %s %.1f / %.1f / %.1f", tk::to_string(isa), native, packed, packed_f);
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  return 0;
}
