// Kernels against plain references, on awkward sizes, for every ISA this CPU runs and every
// GEMM backend compiled in.

#include <doctest/doctest.h>

#include <algorithm>  // std::max, std::min, std::stable_sort, std::count, std::find
#include <atomic>     // std::atomic
#include <cmath>      // std::fabs, std::exp, std::erf, std::sqrt
#include <cstdint>    // int8_t, int32_t
#include <cstdlib>    // std::abs
#include <cstring>    // std::memcmp
#include <limits>     // std::numeric_limits
#include <random>     // std::mt19937
#include <stdexcept>  // std::runtime_error
#include <string>     // std::string
#include <thread>     // std::thread
#include <vector>     // std::vector

// The umbrella header, as in every test, so the single-header leg tests the amalgamated kernels.
#include <taskmoe/taskmoe.hpp>

namespace tk = taskmoe::kernels;

namespace {

std::vector<tk::isa> runnable_isas() {
  std::vector<tk::isa> out;
  for (tk::isa i : {tk::isa::generic, tk::isa::avx2, tk::isa::avx512}) {
    if (tk::cpu_supports(i)) out.push_back(i);
  }
  return out;
}

std::vector<float> random_floats(std::size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<std::int8_t> random_int8(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(-127, 127);
  std::vector<std::int8_t> v(n);
  for (auto& x : v) x = static_cast<std::int8_t>(dist(rng));
  return v;
}

const int sizes[][3] = {{1, 1, 1},   {1, 7, 63},   {7, 65, 33},  {63, 7, 65}, {65, 63, 129},
                        {1, 1000, 64}, {16, 31, 512}, {3, 5, 1000}, {2, 9, 2049}};

}  // namespace

TEST_CASE("isa names parse and unsupported instruction sets are refused") {
  CHECK(tk::parse_isa("avx2") == tk::isa::avx2);
  CHECK_THROWS_AS(tk::parse_isa("sse9"), taskmoe::invalid_argument_error);
  CHECK(tk::cpu_supports(tk::isa::generic));
  for (tk::isa i : {tk::isa::avx2, tk::isa::avx512}) {
    if (!tk::cpu_supports(i)) {
      CHECK_THROWS_AS(tk::scoped_isa_override{i}, taskmoe::invalid_argument_error);
    }
  }
  {
    tk::scoped_isa_override outer(tk::isa::generic);
    CHECK(tk::active_isa() == tk::isa::generic);
  }
  CHECK(tk::cpu_supports(tk::active_isa()));
}

TEST_CASE("gemm_f32 matches the reference on every backend, with alpha, beta and bias") {
  std::vector<tk::gemm_backend> backends{tk::gemm_backend::eigen, tk::gemm_backend::automatic};
  if (tk::gemm_backend_available(tk::gemm_backend::onednn, false)) backends.push_back(tk::gemm_backend::onednn);
  // Float32 rounding bound (Higham, Accuracy and Stability, 3.1): a dot product of length k summed
  // in any order, with or without FMA, is within gamma_k * sum |a_p w_p|, gamma_k = k u / (1 - k u),
  // u = 2^-24. alpha, beta * C and the bias add three more rounded operations, and `expect` itself
  // is rounded to float once: |c - expect| <= gamma_(k+4) (|alpha| S + |beta c| + |bias|).
  const double u = std::ldexp(1.0, -24);
  const auto gamma = [u](int n) { return n * u / (1 - n * u); };
  double worst_ratio = 0;  // observed error / bound, reported below
  for (tk::gemm_backend backend : backends) {
    for (const auto& s : sizes) {
      const int m = s[0], n = s[1], k = s[2];
      const int lda = k + 3, ldw = k + 1, ldc = n + 2;
      for (int variant = 0; variant < 3; ++variant) {
        const float alpha = variant == 1 ? 0.5f : 1.0f;
        const float beta = variant == 2 ? -1.5f : 0.0f;
        const bool with_bias = variant != 1;
        CAPTURE(std::string(tk::to_string(backend))); CAPTURE(m); CAPTURE(n); CAPTURE(k); CAPTURE(variant);
        auto a = random_floats(static_cast<std::size_t>(m) * lda, 1);
        auto w = random_floats(static_cast<std::size_t>(n) * ldw, 2);
        auto bias = random_floats(n, 3);
        auto c = random_floats(static_cast<std::size_t>(m) * ldc, 4);
        if (beta == 0.0f) {
          for (float& x : c) x = std::numeric_limits<float>::quiet_NaN();  // must not be read
        }
        std::vector<double> expect(c.size()), bound(c.size());
        for (int i = 0; i < m; ++i) {
          for (int j = 0; j < n; ++j) {
            double acc = 0, mag = 0;
            for (int p = 0; p < k; ++p) {
              acc += double(a[i * lda + p]) * w[j * ldw + p];
              mag += std::fabs(double(a[i * lda + p]) * w[j * ldw + p]);
            }
            const double cb = beta != 0.0f ? beta * double(c[i * ldc + j]) : 0.0;
            double r = alpha * acc + cb;
            if (with_bias) r += bias[j];
            expect[i * ldc + j] = r;
            bound[i * ldc + j] = gamma(k + 4) * (std::fabs(alpha) * mag + std::fabs(cb) +
                                                 (with_bias ? std::fabs(bias[j]) : 0.0)) +
                                 std::numeric_limits<float>::denorm_min();
          }
        }
        tk::gemm_f32(m, n, k, alpha, a.data(), lda, w.data(), ldw, beta, c.data(), ldc,
                     with_bias ? bias.data() : nullptr, {backend, 1});
        for (int i = 0; i < m; ++i) {
          for (int j = 0; j < n; ++j) {
            const double err = std::fabs(double(c[i * ldc + j]) - expect[i * ldc + j]);
            REQUIRE_MESSAGE(err <= bound[i * ldc + j], "error " << err << " > bound " << bound[i * ldc + j]);
            worst_ratio = std::max(worst_ratio, err / bound[i * ldc + j]);
          }
          for (int j = n; j < ldc; ++j) {  // padding untouched
            REQUIRE(std::isnan(c[i * ldc + j]) == (beta == 0.0f));
          }
        }
      }
    }
  }
  MESSAGE("gemm_f32: largest error / float32 rounding bound = " << worst_ratio);
}

TEST_CASE("the automatic GEMM backend runs the backend it documents") {
  // f32: oneDNN when compiled in, else Eigen. int8: always the native kernels
  // (detail::int8_prefers_onednn, docs/kernels.md). Results must be bit-identical to that backend;
  // for int8 oneDNN scales in another order, so picking it would show up as a difference.
  const tk::gemm_backend f32_expected =
      tk::gemm_backend_available(tk::gemm_backend::onednn, false) ? tk::gemm_backend::onednn : tk::gemm_backend::eigen;
  for (tk::isa isa : runnable_isas()) {
    tk::scoped_isa_override force(isa);
    for (const auto& s : sizes) {
      const int m = s[0], n = s[1], k = s[2];
      CAPTURE(std::string(tk::to_string(isa))); CAPTURE(m); CAPTURE(n); CAPTURE(k);
      const auto a = random_floats(static_cast<std::size_t>(m) * k, 41, -2.0f, 2.0f);
      const auto w = random_floats(static_cast<std::size_t>(n) * k, 42);
      const auto bias = random_floats(n, 43);
      std::vector<float> c_auto(static_cast<std::size_t>(m) * n), c_want(c_auto.size());
      tk::gemm_f32(m, n, k, 1.0f, a.data(), k, w.data(), k, 0.0f, c_auto.data(), n, bias.data(), {tk::gemm_backend::automatic, 1});
      tk::gemm_f32(m, n, k, 1.0f, a.data(), k, w.data(), k, 0.0f, c_want.data(), n, bias.data(), {f32_expected, 1});
      REQUIRE(c_auto == c_want);
      std::vector<std::int8_t> qw(w.size());
      std::vector<float> sw(n);
      tk::quantize_rows_int8(w.data(), n, k, qw.data(), sw.data());
      tk::gemm_int8(m, n, k, a.data(), k, qw.data(), k, sw.data(), c_auto.data(), n, bias.data(), {tk::gemm_backend::automatic, 1});
      tk::gemm_int8(m, n, k, a.data(), k, qw.data(), k, sw.data(), c_want.data(), n, bias.data(), {tk::gemm_backend::native, 1});
      REQUIRE(c_auto == c_want);
    }
  }
}

TEST_CASE("gemm_s8s8_s32 is exact on every ISA path") {
  for (tk::isa isa : runnable_isas()) {
    tk::scoped_isa_override force(isa);
    for (const auto& s : sizes) {
      const int m = s[0], n = s[1], k = s[2];
      const int lda = k + 5, ldw = k + 2, ldc = n + 1;
      CAPTURE(std::string(tk::to_string(isa))); CAPTURE(m); CAPTURE(n); CAPTURE(k);
      auto a = random_int8(static_cast<std::size_t>(m) * lda, 5);
      auto w = random_int8(static_cast<std::size_t>(n) * ldw, 6);
      // Extremes: the largest products, where vpmaddubsw would saturate without the sign trick.
      for (int p = 0; p < k && p < 8; ++p) { a[p] = (p & 1) ? -127 : 127; w[p] = (p & 2) ? -127 : 127; }
      if (k > 3) w[3] = -128;  // legal in a file; meets a = -127: the sign trick must not wrap
      std::vector<std::int32_t> c(static_cast<std::size_t>(m) * ldc, 12345);
      tk::gemm_s8s8_s32(m, n, k, a.data(), lda, w.data(), ldw, c.data(), ldc);
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
          std::int32_t acc = 0;
          for (int p = 0; p < k; ++p) acc += std::int32_t(a[i * lda + p]) * w[j * ldw + p];
          REQUIRE(c[i * ldc + j] == acc);
        }
        for (int j = n; j < ldc; ++j) REQUIRE(c[i * ldc + j] == 12345);
      }
    }
  }
}

TEST_CASE("quantize_rows_int8 is symmetric, bounded and safe on zero rows") {
  const int rows = 4, cols = 37;
  auto w = random_floats(rows * cols, 7, -3.0f, 3.0f);
  for (int j = 0; j < cols; ++j) w[2 * cols + j] = 0.0f;
  std::vector<std::int8_t> q(rows * cols);
  std::vector<float> scales(rows);
  tk::quantize_rows_int8(w.data(), rows, cols, q.data(), scales.data());
  CHECK(scales[2] == 0.0f);
  for (int r = 0; r < rows; ++r) {
    int qmax = 0;
    for (int j = 0; j < cols; ++j) {
      const int v = q[r * cols + j];
      CHECK(v >= -127);
      qmax = std::max(qmax, std::abs(v));
      CHECK(std::fabs(v * scales[r] - w[r * cols + j]) <= 0.5f * scales[r] + 1e-6f);
    }
    if (r != 2) CHECK(qmax == 127);
  }
  w[5] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(tk::quantize_rows_int8(w.data(), rows, cols, q.data(), scales.data()),
                  taskmoe::invalid_argument_error);
}

TEST_CASE("gemm_int8 equals the exact integer product times the scales, on every backend and ISA") {
  // `automatic` resolves to one of these; the test above checks which.
  std::vector<tk::gemm_backend> backends{tk::gemm_backend::native};
  if (tk::gemm_backend_available(tk::gemm_backend::onednn, true)) backends.push_back(tk::gemm_backend::onednn);
  for (tk::isa isa : runnable_isas()) {
    tk::scoped_isa_override force(isa);
    for (tk::gemm_backend backend : backends) {
      for (const auto& s : sizes) {
        const int m = s[0], n = s[1], k = s[2];
        const int lda = k + 1, ldc = n + 3;
        CAPTURE(std::string(tk::to_string(isa))); CAPTURE(std::string(tk::to_string(backend))); CAPTURE(m); CAPTURE(n); CAPTURE(k);
        auto a = random_floats(static_cast<std::size_t>(m) * lda, 8, -2.0f, 2.0f);
        if (m > 1) for (int p = 0; p < k; ++p) a[lda + p] = 0.0f;  // an all-zero activation row
        auto wf = random_floats(static_cast<std::size_t>(n) * k, 9);
        auto bias = random_floats(n, 10);
        std::vector<std::int8_t> qw(wf.size());
        std::vector<float> sw(n);
        tk::quantize_rows_int8(wf.data(), n, k, qw.data(), sw.data());
        if (backend == tk::gemm_backend::onednn) {
          // oneDNN on CPUs without VNNI computes u8 x s8 with vpmaddubsw, whose int16 pair sums
          // saturate for 8-bit weights (docs/kernels.md); 7-bit weights keep it exact.
          for (auto& q : qw) q = static_cast<std::int8_t>(q / 2);
          for (std::size_t r = 0; r < wf.size(); ++r) wf[r] = qw[r] * sw[r / k];
        }
        std::vector<std::int8_t> qa(static_cast<std::size_t>(m) * k);
        std::vector<float> sa(m);
        tk::quantize_rows_int8(a.data(), m, k, lda, qa.data(), k, sa.data());
        std::vector<float> c(static_cast<std::size_t>(m) * ldc, -7.0f);
        tk::gemm_int8(m, n, k, a.data(), lda, qw.data(), k, sw.data(), c.data(), ldc, bias.data(),
                      {backend, 1});
        for (int i = 0; i < m; ++i) {
          for (int j = 0; j < n; ++j) {
            std::int32_t iacc = 0;
            double facc = 0;
            for (int p = 0; p < k; ++p) {
              iacc += std::int32_t(qa[i * k + p]) * qw[j * k + p];
              facc += double(a[i * lda + p]) * wf[j * k + p];
            }
            const double exact = double(iacc) * sa[i] * sw[j] + bias[j];
            // Only float rounding of the scaling separates the result from the integer product.
            REQUIRE(c[i * ldc + j] == doctest::Approx(exact).epsilon(1e-5).scale(1.0));
            // And the quantized product stays within the quantization error of the f32 one:
            // |a.w - qa.qw sa sw| <= sum |a| |dw| + |dw| ... bounded by half a step on each side.
            double bound = 0;
            for (int p = 0; p < k; ++p) {
              bound += 0.5 * sa[i] * std::fabs(wf[j * k + p]) + 0.5 * sw[j] * std::fabs(a[i * lda + p]) +
                       0.25 * sa[i] * sw[j];
            }
            REQUIRE(std::fabs(c[i * ldc + j] - (facc + bias[j])) <= bound + 1e-4);
          }
          for (int j = n; j < ldc; ++j) REQUIRE(c[i * ldc + j] == -7.0f);
        }
      }
    }
  }
}

TEST_CASE("gemm functions reject bad arguments with an exception") {
  std::vector<float> a(16), w(16), c(16), s(4);
  std::vector<std::int8_t> q(16);
  using err = taskmoe::invalid_argument_error;
  CHECK_THROWS_AS(tk::gemm_f32(-1, 4, 4, 1, a.data(), 4, w.data(), 4, 0, c.data(), 4), err);
  CHECK_THROWS_AS(tk::gemm_f32(2, 4, 4, 1, nullptr, 4, w.data(), 4, 0, c.data(), 4), err);
  CHECK_THROWS_AS(tk::gemm_f32(2, 4, 4, 1, a.data(), 3, w.data(), 4, 0, c.data(), 4), err);
  CHECK_THROWS_AS(tk::gemm_f32(2, 4, 4, 1, a.data(), 4, w.data(), 4, 0, c.data(), 4, nullptr,
                               {tk::gemm_backend::native, 1}), err);
  CHECK_THROWS_AS(tk::gemm_f32(2, 4, 4, 1, a.data(), 4, w.data(), 4, 0, c.data(), 4, nullptr,
                               {tk::gemm_backend::automatic, 0}), err);
  CHECK_THROWS_AS(tk::gemm_int8(2, 4, 4, a.data(), 4, q.data(), 4, nullptr, c.data(), 4), err);
  CHECK_THROWS_AS(tk::gemm_int8(2, 4, 4, a.data(), 4, q.data(), 4, s.data(), c.data(), 4, nullptr,
                                {tk::gemm_backend::eigen, 1}), err);
  CHECK_THROWS_AS(tk::quantize_rows_int8(a.data(), 2, -1, q.data(), s.data()), err);
  tk::gemm_f32(0, 0, 0, 1, nullptr, 1, nullptr, 1, 0, nullptr, 1);  // empty: fine
  tk::gemm_f32(2, 3, 0, 1, a.data(), 1, w.data(), 1, 0, c.data(), 3);  // k == 0: C = 0
  for (int i = 0; i < 6; ++i) CHECK(c[i] == 0.0f);
}

TEST_CASE("layer_norm matches the reference, and a constant row gives beta") {
  for (tk::isa isa : runnable_isas()) {
    tk::scoped_isa_override force(isa);
    for (int d : {1, 7, 63, 65, 512}) {
      const int rows = 5, ld = d + 3;
      auto x = random_floats(static_cast<std::size_t>(rows) * ld, 11, -4.0f, 6.0f);
      for (int j = 0; j < d; ++j) x[3 * ld + j] = 2.5f;  // constant row
      auto gamma = random_floats(d, 12), beta = random_floats(d, 13);
      std::vector<float> y(x.size());
      tk::layer_norm(x.data(), rows, d, ld, gamma.data(), beta.data(), 1e-5f, y.data(), ld);
      for (int r = 0; r < rows; ++r) {
        double mean = 0, var = 0;
        for (int j = 0; j < d; ++j) mean += x[r * ld + j];
        mean /= d;
        for (int j = 0; j < d; ++j) var += (x[r * ld + j] - mean) * (x[r * ld + j] - mean);
        var /= d;
        for (int j = 0; j < d; ++j) {
          const double e = (x[r * ld + j] - mean) / std::sqrt(var + 1e-5) * gamma[j] + beta[j];
          REQUIRE(y[r * ld + j] == doctest::Approx(e).epsilon(1e-4).scale(1.0));
        }
      }
      for (int j = 0; j < d; ++j) CHECK(y[3 * ld + j] == beta[j]);
      tk::layer_norm(x.data(), rows, d, ld, nullptr, nullptr, 1e-5f, x.data(), ld);  // in place
      CHECK(x[3 * ld] == 0.0f);
    }
  }
  float v = 1.0f;
  CHECK_THROWS_AS(tk::layer_norm(&v, 1, 1, 1, nullptr, nullptr, -1.0f, &v, 1), taskmoe::invalid_argument_error);
}

TEST_CASE("softmax and log_softmax are stable and define fully masked rows, on every ISA") {
  const float ninf = -std::numeric_limits<float>::infinity();
  for (tk::isa isa : runnable_isas()) {
    tk::scoped_isa_override force(isa);
    CAPTURE(std::string(tk::to_string(isa)));
    // Around the 8- and 16-lane vectors and their tails, and a vocabulary-sized row.
    for (int n : {1, 7, 8, 9, 15, 16, 17, 63, 65, 1000, 8000}) {
      CAPTURE(n);
      const int rows = 3;
      // -60..60: exponents from e^0 down to below float's range (e^-120), where exp must give 0.
      auto x = random_floats(static_cast<std::size_t>(rows) * n, 14, -60.0f, 60.0f);
      x[0] = 1e30f;                                       // huge value: no overflow
      for (int j = 1; j < n; j += 2) x[n + j] = ninf;     // partially masked row
      for (int j = 0; j < n; ++j) x[2 * n + j] = ninf;    // fully masked row
      std::vector<float> y(x.size()), ly(x.size());
      tk::softmax(x.data(), rows, n, n, y.data(), n);
      tk::log_softmax(x.data(), rows, n, n, ly.data(), n);
      for (int r = 0; r < 2; ++r) {
        double mx = ninf, sum = 0;
        for (int j = 0; j < n; ++j) mx = std::max<double>(mx, x[r * n + j]);
        for (int j = 0; j < n; ++j) sum += std::exp(double(x[r * n + j]) - mx);
        double total = 0;
        for (int j = 0; j < n; ++j) {
          const double e = std::exp(double(x[r * n + j]) - mx) / sum;
          REQUIRE(y[r * n + j] == doctest::Approx(e).epsilon(1e-5).scale(1e-6));
          const double le = double(x[r * n + j]) - mx - std::log(sum);
          if (std::isinf(le)) REQUIRE(ly[r * n + j] == ninf);
          else REQUIRE(ly[r * n + j] == doctest::Approx(le).epsilon(1e-5).scale(1.0));
          total += y[r * n + j];
        }
        CHECK(total == doctest::Approx(1.0).epsilon(1e-5));
      }
      for (int j = 0; j < n; ++j) {
        CHECK(y[2 * n + j] == 0.0f);
        CHECK(ly[2 * n + j] == ninf);
      }
      // Values within 3 of the maximum: every term counts in the sum, so an inexact exp shows.
      auto near = random_floats(static_cast<std::size_t>(n), 16, -3.0f, 0.0f);
      std::vector<float> lnear(near.size());
      tk::log_softmax(near.data(), 1, n, n, lnear.data(), n);
      double nmx = ninf, nsum = 0, worst = 0;
      for (float v : near) nmx = std::max<double>(nmx, v);
      for (float v : near) nsum += std::exp(double(v) - nmx);
      for (int j = 0; j < n; ++j) worst = std::max(worst, std::fabs(lnear[j] - (double(near[j]) - nmx - std::log(nsum))));
      CHECK(worst < 2e-6);
    }
  }
}

TEST_CASE("relu, gelu, add_bias and residual_add match the reference on every ISA") {
  for (tk::isa isa : runnable_isas()) {
    tk::scoped_isa_override force(isa);
    for (int n : {1, 7, 63, 65, 1000}) {
      auto x = random_floats(n, 15, -5.0f, 5.0f);
      auto r = x, g = x;
      tk::relu(r.data(), r.size());
      tk::gelu(g.data(), g.size());
      for (int i = 0; i < n; ++i) {
        CHECK(r[i] == (x[i] > 0 ? x[i] : 0.0f));
        const double e = 0.5 * x[i] * (1.0 + std::erf(x[i] / std::sqrt(2.0)));
        REQUIRE(std::fabs(g[i] - e) <= 1e-6 + 1e-5 * std::fabs(e));
      }
      const int rows = 3, ld = n + 1;
      auto y = random_floats(static_cast<std::size_t>(rows) * ld, 16);
      auto b = random_floats(n, 17);
      auto z = random_floats(static_cast<std::size_t>(rows) * ld, 18);
      auto y0 = y;
      tk::add_bias(y.data(), rows, n, ld, b.data());
      tk::residual_add(y.data(), rows, n, ld, z.data(), ld);
      for (int i = 0; i < rows; ++i) {
        for (int j = 0; j < n; ++j) REQUIRE(y[i * ld + j] == (y0[i * ld + j] + b[j]) + z[i * ld + j]);
        CHECK(y[i * ld + n] == y0[i * ld + n]);
      }
    }
  }
}

TEST_CASE("top_k and argmax break ties towards the lower index") {
  const float x[] = {1.0f, 3.0f, 2.0f, 3.0f, std::numeric_limits<float>::quiet_NaN(), 3.0f, -1.0f};
  int idx[7];
  float val[4];
  tk::top_k(x, 7, 4, idx, val);
  CHECK(idx[0] == 1); CHECK(idx[1] == 3); CHECK(idx[2] == 5); CHECK(idx[3] == 2);
  CHECK(val[3] == 2.0f);
  CHECK(tk::argmax(x, 7) == 1);
  tk::top_k(x, 7, 7, idx, nullptr);
  CHECK(idx[6] == 4);  // NaN ranks last
  CHECK_THROWS_AS(tk::top_k(x, 7, 8, idx, val), taskmoe::invalid_argument_error);
  CHECK_THROWS_AS(tk::argmax(x, 0), taskmoe::invalid_argument_error);
  // Random rows against a sort-based reference.
  for (int n : {1, 7, 65, 1000}) {
    std::vector<float> v = random_floats(n, 19);
    for (int i = 0; i < n; i += 3) v[i] = 0.25f;  // many ties
    const int k = std::min(n, 5);
    std::vector<int> got(k), ref(n);
    tk::top_k(v.data(), n, k, got.data(), nullptr);
    for (int i = 0; i < n; ++i) ref[i] = i;
    std::stable_sort(ref.begin(), ref.end(), [&](int a, int b) { return v[a] > v[b]; });
    for (int j = 0; j < k; ++j) CHECK(got[j] == ref[j]);
    CHECK(tk::argmax(v.data(), n) == ref[0]);
  }
}

TEST_CASE("top_k equals a stable sort on long rows: ties, NaN, -inf, signed zeros, sorted inputs") {
  // The skip over vectors that cannot enter the list: sizes around the vector width, the beam
  // search's beam x vocab, k up to n, and orders that make the list change often.
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  auto ranks_before = [](float va, int ia, float vb, int ib) {  // NaN last, ties to the lower index
    if (va != va) return false;
    if (vb != vb) return true;
    return va > vb || (va == vb && ia < ib);
  };
  for (int n : {1, 3, 4, 5, 15, 16, 17, 63, 65, 1000, 32003}) {
    for (int pattern = 0; pattern < 5; ++pattern) {
      std::vector<float> v = random_floats(static_cast<std::size_t>(n), 40u + static_cast<unsigned>(pattern));
      for (int i = 0; i < n; ++i) {
        if (pattern == 1) v[i] = static_cast<float>(i % 7) * 0.5f;           // ties everywhere
        if (pattern == 2) v[i] = static_cast<float>(i);                       // ascending: every value enters
        if (pattern == 3) v[i] = i % 5 == 0 ? nan : (i % 5 == 1 ? -inf : v[i]);
        if (pattern == 4) v[i] = i % 2 ? 0.0f : -0.0f;                        // equal, signed
      }
      if (pattern == 3 && n > 2) v[static_cast<std::size_t>(n) - 1] = inf;   // the best comes last
      std::vector<int> ref(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) ref[static_cast<std::size_t>(i)] = i;
      std::stable_sort(ref.begin(), ref.end(), [&](int a, int b) { return ranks_before(v[a], a, v[b], b); });
      for (int k : {1, 2, 8, n / 2, n}) {
        if (k < 1 || k > n || (n > 1000 && k > 8)) continue;  // O(n k) on ascending input
        CAPTURE(n); CAPTURE(pattern); CAPTURE(k);
        std::vector<int> got(static_cast<std::size_t>(k));
        std::vector<float> val(static_cast<std::size_t>(k));
        tk::top_k(v.data(), n, k, got.data(), val.data());
        bool same = true;
        for (int j = 0; j < k; ++j) same = same && got[static_cast<std::size_t>(j)] == ref[static_cast<std::size_t>(j)];
        CHECK(same);
      }
    }
  }
  // All NaN: the k-th stays NaN, nothing is skipped, indices in order.
  std::vector<float> all_nan(100, nan);
  int idx[3];
  tk::top_k(all_nan.data(), 100, 3, idx, nullptr);
  CHECK(idx[0] == 0); CHECK(idx[1] == 1); CHECK(idx[2] == 2);
  all_nan[77] = -inf;  // any number beats NaN
  tk::top_k(all_nan.data(), 100, 3, idx, nullptr);
  CHECK(idx[0] == 77); CHECK(idx[1] == 0); CHECK(idx[2] == 1);
}

// int8_weights::narrow as its definition says, written out plainly: rows with max|w| over 64
// requantized to round-half-away(w * 64 / max|w|), their scales times max|w| / 64 (else 1).
static float narrow_reference(std::int8_t* w, int k) {
  int m = 0;
  for (int p = 0; p < k; ++p) m = std::max(m, std::abs(int(w[p])));
  if (m <= 64) return 1.0f;
  for (int p = 0; p < k; ++p) {
    const double x = double(w[p]) * 64.0 / m;
    w[p] = static_cast<std::int8_t>(x < 0 ? -std::floor(-x + 0.5) : std::floor(x + 0.5));
  }
  return static_cast<float>(m) / 64.0f;
}

TEST_CASE("narrowing int8 rows: the AVX2 form equals the definition for every max|w| and value") {
  // Rows of 300 (vector blocks and a tail) holding every value in [-m, m] for each max|w| = m,
  // -128 included: the scalar definition (detail::narrow_row) against the plain reference, and
  // the AVX2 form (its reciprocal trick) against both.
  const bool avx2 = tk::cpu_supports(tk::isa::avx2);
  if (!avx2) MESSAGE("no AVX2 on this CPU: only the scalar definition runs");
  for (int m = 0; m <= 128; ++m) {
    CAPTURE(m);
    const int k = 300;
    std::vector<std::int8_t> row(k);
    for (int p = 0; p < k; ++p) row[p] = static_cast<std::int8_t>(std::min(127, -m + p % (2 * m + 1)));
    row[k - 1] = static_cast<std::int8_t>(m == 128 ? -128 : m);  // the max in the tail too
    std::vector<std::int8_t> want = row, scalar(k, 99), vec(k, 99);
    const float by = narrow_reference(want.data(), k);
    const int got_m = tk::detail::narrow_row(row.data(), k, scalar.data());
    REQUIRE(got_m == m);
    CHECK(by == (m > 64 ? static_cast<float>(m) / 64.0f : 1.0f));
    if (m > 64) CHECK(scalar == want);
#if TASKMOE_KERNELS_X86
    if (avx2) {
      REQUIRE(tk::detail::avx2::narrow_row(row.data(), k, vec.data(), tk::narrow_weight_limit) == m);
      if (m > 64) CHECK(vec == want);
    }
#endif
  }
}

TEST_CASE("gemm_packed_int8 equals the plain integer reference bit for bit on every ISA") {
  // Awkward sizes around the 4-row / 16-column / 4-deep tiles, and the decoder's shapes.
  // Each with the weights full and narrow (int8_weights): narrow ones take the AVX2 kernel for
  // shifted activations where the sign trick would run.
  // Rows >= int8_pairs_min_rows (8) also take the AVX2 pair-products kernel where it is forced on
  // (avx2 pass; odd row counts end in a 1-row tile). Rows >= int8_amx_min_rows (8) with K a
  // multiple of 64 take the AMX kernel where the CPU has it (avx512 pass; row counts that are not
  // a multiple of 16 end in a zero-padded tile, panel counts that are not a multiple of 4 in
  // single-panel blocks).
  const int shapes[][3] = {{1, 1, 1},    {1, 7, 3},     {3, 17, 7},     {7, 63, 63},   {63, 65, 65},
                           {65, 1000, 3}, {1, 1000, 64}, {2, 129, 1000}, {5, 48, 2049}, {1, 520, 512},
                           {4, 64, 4},   {9, 33, 129},  {16, 31, 5},    {17, 70, 257}, {64, 48, 520},
                           {4, 17, 64},  {15, 100, 128}, {33, 65, 192}, {16, 64, 1024}, {50, 130, 256},
                           {100, 40, 4096}};  // two row blocks (128 KB of activations, at least 64 rows)
  // On a CPU with AVX-VNNI the avx2 pass runs a third time with it off: the sign-trick kernel of
  // CPUs without it.
  const bool amx_cpu = tk::detect_cpu_features().amx_int8, avxvnni_cpu = tk::detect_cpu_features().avxvnni;
  for (tk::isa isa : runnable_isas())
  for (int option = 0; option < (isa == tk::isa::avx2 ? (avxvnni_cpu ? 3 : 2) : isa == tk::isa::avx512 && amx_cpu ? 2 : 1); ++option) {
    tk::scoped_isa_override force(isa);
    const bool pairs = isa == tk::isa::avx2 && option == 1, amx = isa == tk::isa::avx512 && option == 1;
    const bool sign_trick = isa == tk::isa::avx2 && option == 2;
    tk::scoped_int8_pairs_override force_pairs(pairs);
    tk::scoped_int8_amx_override force_amx(amx);
    tk::scoped_int8_avxvnni_override force_avxvnni(!sign_trick);
    for (const auto& s : shapes)
    for (const bool narrow : {false, true}) {
      const int m = s[0], n = s[1], k = s[2];
      const int k4 = (k + 3) / 4 * 4;
      const tk::detail::packed_kernel chosen = tk::detail::choose_packed_kernel(m, k4, narrow);
      if (pairs) CHECK((chosen == tk::detail::packed_kernel::avx2_pairs) == (m >= tk::detail::int8_pairs_min_rows));
      if (sign_trick) CHECK(chosen == (narrow ? tk::detail::packed_kernel::avx2_narrow : tk::detail::packed_kernel::avx2));
      CHECK((chosen == tk::detail::packed_kernel::amx) == (amx && m >= tk::detail::int8_amx_min_rows && k4 % 64 == 0));
      const int lda = k + 3, ldc = n + 2;
      // Variants 4 and 5: activations >= 0 (a ReLU's output), which the AVX2 kernel multiplies
      // as unsigned bytes without the sign trick.
      for (int variant = 0; variant < 6; ++variant) {
        const bool relu = variant & 1, accumulate = variant & 2, nonnegative = variant >= 4;
        const int threads = variant == 3 ? 3 : 1;
        CAPTURE(std::string(tk::to_string(isa))); CAPTURE(option); CAPTURE(m); CAPTURE(n); CAPTURE(k); CAPTURE(variant);
        CAPTURE(narrow);
        auto a = random_floats(static_cast<std::size_t>(m) * lda, 21 + variant, nonnegative ? 0.0f : -2.0f, 2.0f);
        if (m > 2) for (int p = 0; p < k; ++p) a[2 * lda + p] = 0.0f;  // an all-zero row
        // Two stacked parts (the fused-QKV / expert case), the second with a gate multiplier.
        const int n1 = n / 2, n2 = n - n1;
        auto w = random_int8(static_cast<std::size_t>(n) * k, 22);
        w[0] = -128;  // legal in a file: the kernels must stay exact on it (a pair of them)
        if (w.size() > 1) w[1] = -128;
        // Narrow: rows at the limit and just over it (kept as they are / requantized).
        if (n > 3 && k > 1) {
          for (int p = 0; p < k; ++p) w[2 * k + p] = static_cast<std::int8_t>(p % 2 ? -64 : 64);
          for (int p = 0; p < k; ++p) w[3 * k + p] = static_cast<std::int8_t>(p % 3 ? -65 : 65);
        }
        // Extreme products: +-127 (2 is the row's maximum) against the -128 pair, the largest
        // 16-bit pair sums the AVX2 kernels form (2 * 127 * 128 in magnitude).
        for (int p = 0; p < k && p < 8; ++p) a[p] = (p & 2) && !nonnegative ? -2.0f : 2.0f;
        auto sw = random_floats(n, 23, 0.001f, 0.05f);
        auto bias = random_floats(n, 24);
        const float gate = 0.37f;
        const auto packed = tk::packed_int8::pack(
            {{w.data(), n1, k, sw.data(), bias.data(), 1.0f},
             {w.data() + static_cast<std::size_t>(n1) * k, n2, k, sw.data() + n1, bias.data() + n1, gate}},
            k, narrow ? tk::int8_weights::narrow : tk::int8_weights::full);
        REQUIRE(packed.rows() == n);
        REQUIRE(packed.cols() == k);
        REQUIRE(packed.weights() == (narrow ? tk::int8_weights::narrow : tk::int8_weights::full));
        std::vector<float> narrowed_by(static_cast<std::size_t>(n), 1.0f);
        if (narrow)
          for (int j = 0; j < n; ++j) narrowed_by[j] = narrow_reference(w.data() + static_cast<std::size_t>(j) * k, k);
        std::vector<std::int8_t> qa(static_cast<std::size_t>(m) * k);
        std::vector<float> sa(m);
        tk::quantize_rows_int8(a.data(), m, k, lda, qa.data(), k, sa.data());
        const std::vector<float> before = random_floats(static_cast<std::size_t>(m) * ldc, 25);
        std::vector<float> c = before;
        tk::gemm_packed_int8(m, a.data(), lda, packed, c.data(), ldc, {relu, accumulate, threads});
        for (int i = 0; i < m; ++i) {
          for (int j = 0; j < n; ++j) {
            std::int32_t iacc = 0;
            for (int p = 0; p < k; ++p) iacc += std::int32_t(qa[i * k + p]) * w[j * k + p];
            const float mult = j < n1 ? 1.0f : gate;
            // The kernels' epilogue: one explicit fused multiply-add (kernels/arch/generic.hpp).
            float want = std::fma(static_cast<float>(iacc), sa[i] * (sw[j] * mult * narrowed_by[j]), bias[j] * mult);
            if (relu && !(want > 0.0f)) want = 0.0f;
            if (accumulate) want = before[i * ldc + j] + want;
            REQUIRE(c[i * ldc + j] == want);
          }
          for (int j = n; j < ldc; ++j) REQUIRE(c[i * ldc + j] == before[i * ldc + j]);  // padding untouched
        }
      }
    }
  }
}

TEST_CASE("the sign-trick kernel's group schedule: pairs within the int16 bound, exact at the bound") {
  // Where the AVX2 sign-trick kernel may run, packing schedules each panel's k-groups in pairs
  // whose |w| sums add to at most 258 per int16 lane (arch/avx2.hpp: pair_groups); the kernel then
  // adds two groups' 16-bit pair sums before widening, which is exact only within that bound.
  const auto cpu = runnable_isas();
  REQUIRE(!cpu.empty());
  if (std::find(cpu.begin(), cpu.end(), tk::isa::avx2) == cpu.end()) {
    MESSAGE("no AVX2 on this CPU: the sign-trick kernel and its schedule do not exist here");
    return;
  }
  tk::scoped_isa_override force(tk::isa::avx2);
  tk::scoped_int8_avxvnni_override sign_trick(false);  // on AVX-VNNI CPUs too
  tk::scoped_int8_pairs_override no_pairs(false);       // Zen 1 would take pair products from 8 rows
  // Kind 0, at the bound: in group g every column's bytes are |w| = 127, 2 (lane sum 129), or in
  // every third group 127, 3 (130): two 129-groups pair exactly at 258, a 130-group with nothing
  // (259). Signs follow row 0's activations (all products +127 * |w|) and oppose row 1's (all
  // negative): the paired int16 sums reach +-127 * 258 = +-32766. Kind 1: quantized normal
  // weights, awkward sizes, -128 in a corner.
  const int shapes[][3] = {{7, 40, 160}, {2, 40, 160}, {9, 33, 1000}, {64, 70, 516}, {5, 17, 37}};
  for (int kind = 0; kind < 2; ++kind)
    for (const auto& s : shapes) {
      const int m = s[0], n = s[1], k = kind == 0 ? 160 : s[2];
      CAPTURE(kind); CAPTURE(m); CAPTURE(n); CAPTURE(k);
      const int groups = (k + 3) / 4;
      auto a = random_floats(static_cast<std::size_t>(m) * k, 41, -2.0f, 2.0f);
      std::vector<std::int8_t> w(static_cast<std::size_t>(n) * k);
      std::vector<float> sw(n, 0.01f);
      if (kind == 0) {
        for (int p = 0; p < k; ++p) {
          const float sign = a[p] < 0.0f ? -1.0f : 1.0f;
          a[p] = 2.0f * sign;                        // row 0: +-127 after quantization
          if (m > 1) a[static_cast<std::size_t>(k) + p] = -2.0f * sign;  // row 1: the opposite
        }
        for (int j = 0; j < n; ++j)
          for (int p = 0; p < k; ++p) {
            const int mag = p % 2 == 0 ? 127 : (p / 4) % 3 == 2 ? 3 : 2;
            w[static_cast<std::size_t>(j) * k + p] = static_cast<std::int8_t>(a[p] < 0.0f ? -mag : mag);
          }
      } else {
        std::vector<float> normal(w.size());
        std::mt19937 rng(43);
        std::normal_distribution<float> dist(0.0f, 1.0f);
        for (float& x : normal) x = dist(rng);
        tk::quantize_rows_int8(normal.data(), n, k, k, w.data(), k, sw.data());
        w[0] = -128;
      }
      const auto packed = tk::packed_int8::pack({{w.data(), n, k, sw.data(), nullptr, 1.0f}}, k);
      REQUIRE(packed.has_group_schedule());
      const auto g = tk::packed_access::call(packed);
      int paired = 0;
      for (int panel = 0; panel < packed.panels(); ++panel) {
        const std::uint16_t* order = g.group_order + static_cast<std::size_t>(panel) * groups;
        const int in_pairs = g.paired_groups[panel];
        REQUIRE(in_pairs % 2 == 0);
        REQUIRE(in_pairs <= groups);
        paired += in_pairs;
        std::vector<int> seen(groups, 0);
        for (int q = 0; q < groups; ++q) {
          REQUIRE(order[q] < groups);
          ++seen[order[q]];
        }
        CHECK(std::count(seen.begin(), seen.end(), 1) == groups);  // a permutation
        // |w| sum of one group's byte pair (column c, bytes 2h, 2h + 1), from the source rows.
        auto lane = [&](int group, int c, int h) {
          const int j = panel * 16 + c;
          int sum = 0;
          for (int b = 2 * h; b < 2 * h + 2; ++b) {
            const int p = 4 * group + b;
            if (j < n && p < k) sum += std::abs(static_cast<int>(w[static_cast<std::size_t>(j) * k + p]));
          }
          return sum;
        };
        for (int q = 0; q < in_pairs; q += 2)
          for (int c = 0; c < 16; ++c)
            for (int h = 0; h < 2; ++h) REQUIRE(lane(order[q], c, h) + lane(order[q + 1], c, h) <= 258);
        if (kind == 0)
          for (int q = 0; q < in_pairs; ++q) CHECK(order[q] % 3 != 2);  // 130 pairs with nothing here
      }
      if (kind == 0) CHECK(paired >= packed.panels() * (groups - (groups + 1) / 3 - 1));
      if (kind == 1 && k >= 160) CHECK(paired >= packed.panels() * groups * 8 / 10);  // most pair
      // The product, bit for bit against the integer reference (the kernels' epilogue).
      std::vector<std::int8_t> qa(static_cast<std::size_t>(m) * k);
      std::vector<float> sa(m);
      tk::quantize_rows_int8(a.data(), m, k, k, qa.data(), k, sa.data());
      if (kind == 0) REQUIRE(std::abs(static_cast<int>(qa[0])) == 127);
      CHECK(tk::detail::choose_packed_kernel(m, groups * 4) == tk::detail::packed_kernel::avx2);
      std::vector<float> c(static_cast<std::size_t>(m) * n);
      tk::gemm_packed_int8(m, a.data(), k, packed, c.data(), n);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          std::int32_t iacc = 0;
          for (int p = 0; p < k; ++p) iacc += std::int32_t(qa[static_cast<std::size_t>(i) * k + p]) * w[static_cast<std::size_t>(j) * k + p];
          REQUIRE(c[static_cast<std::size_t>(i) * n + j] == static_cast<float>(iacc) * (sa[i] * sw[j]));
        }
    }
}

TEST_CASE("packed int8 weights: every ISA packs the same bytes and the VNNI compensation 128 * row sum") {
  // AVX2 packs whole panels with an in-register transpose and sums rows with vpsadbw; the
  // compensation is read only by the VNNI kernels, so it is checked here directly.
  const int shapes[][2] = {{1, 1}, {15, 31}, {16, 32}, {17, 33}, {48, 2049}, {129, 1000}, {64, 4}};
  for (const auto& s : shapes) {
    const int n = s[0], k = s[1];
    CAPTURE(n); CAPTURE(k);
    auto w = random_int8(static_cast<std::size_t>(n) * k, 31);
    w[0] = -128;
    const auto sw = random_floats(n, 32, 0.001f, 0.05f);
    std::vector<tk::packed_int8> packs;
    for (tk::isa isa : runnable_isas()) {
      tk::scoped_isa_override force(isa);
      packs.push_back(tk::packed_int8::pack({{w.data(), n, k, sw.data(), nullptr, 1.0f}}, k));
      // Panels split over intra-op threads (a model's load): the same bytes.
      const tk::scoped_intra_op_threads threads(3);
      packs.push_back(tk::packed_int8::pack({{w.data(), n, k, sw.data(), nullptr, 1.0f}}, k));
    }
    const int k4 = (k + 3) / 4 * 4;
    const std::size_t bytes = static_cast<std::size_t>(packs[0].panels()) * 16 * k4;
    for (const tk::packed_int8& p : packs) {
      const auto g = tk::packed_access::call(p);
      for (int j = 0; j < n; ++j) {
        std::int32_t sum = 0;
        for (int q = 0; q < k; ++q) sum += w[static_cast<std::size_t>(j) * k + q];
        REQUIRE(g.comp[j] == 128 * sum);
        // column j, k index q: panel j / 16, group q / 4, lane j % 16, byte q % 4
        for (int q = 0; q < k; ++q)
          REQUIRE(g.data[static_cast<std::size_t>(j / 16) * 16 * k4 + static_cast<std::size_t>(q / 4) * 64 + (j % 16) * 4 + q % 4] ==
                  w[static_cast<std::size_t>(j) * k + q]);
      }
      const auto g0 = tk::packed_access::call(packs[0]);
      CHECK(std::equal(g.data, g.data + bytes, g0.data));  // padding (zero) included
    }
  }
}

TEST_CASE("packed int8 weights: quantize_pack matches quantize + pack, bad arguments throw") {
  const int n = 19, k = 45;
  auto wf = random_floats(static_cast<std::size_t>(n) * k, 31);
  std::vector<std::int8_t> q(wf.size());
  std::vector<float> s(n);
  tk::quantize_rows_int8(wf.data(), n, k, q.data(), s.data());
  const auto direct = tk::quantize_pack(wf.data(), n, k, k);
  const auto manual = tk::packed_int8::pack({{q.data(), n, k, s.data(), nullptr, 1.0f}}, k);
  const auto a = random_floats(3 * k, 32);
  std::vector<float> c1(3 * n), c2(3 * n);
  tk::gemm_packed_int8(3, a.data(), k, direct, c1.data(), n);
  tk::gemm_packed_int8(3, a.data(), k, manual, c2.data(), n);
  CHECK(c1 == c2);
  // float16 weights: the same as quantize_pack of their exact widening, with one thread or more
  // (blocks of 64 rows: 150 rows end in a partial block), full and narrow.
  {
    const int n16 = 150;
    const auto wf16 = random_floats(static_cast<std::size_t>(n16) * k, 34, -2.0f, 2.0f);
    std::vector<std::uint16_t> h(wf16.size());
    std::vector<float> widened(wf16.size());
    tk::to_float16(wf16.data(), static_cast<int>(wf16.size()), h.data());
    tk::from_float16(h.data(), static_cast<int>(h.size()), widened.data());
    const auto b16 = random_floats(n16, 35);
    const auto a16 = random_floats(5 * k, 36);
    for (tk::int8_weights weights : {tk::int8_weights::full, tk::int8_weights::narrow}) {
      std::vector<float> one_thread;
      for (int threads : {1, 2}) {
        CAPTURE(threads);
        const tk::scoped_intra_op_threads scope(threads);
        const auto from16 = tk::quantize_pack(h.data(), n16, k, k, b16.data(), weights);
        const auto from32 = tk::quantize_pack(widened.data(), n16, k, k, b16.data(), weights);
        std::vector<float> y16(5 * n16), y32(5 * n16);
        tk::gemm_packed_int8(5, a16.data(), k, from16, y16.data(), n16);
        tk::gemm_packed_int8(5, a16.data(), k, from32, y32.data(), n16);
        CHECK(y16 == y32);
        CHECK(from16.weights() == tk::resolve_int8_weights(weights));
        if (one_thread.empty()) one_thread = y16;
        CHECK(y16 == one_thread);  // panels packed (and narrowed) on two threads: the same
      }
    }
    CHECK_THROWS_AS(tk::quantize_pack(h.data(), n16, k, k - 1), taskmoe::invalid_argument_error);
    CHECK_THROWS_AS(tk::quantize_pack(static_cast<const std::uint16_t*>(nullptr), n16, k, k), taskmoe::invalid_argument_error);
  }
  const auto err = [](auto f) { CHECK_THROWS_AS(f(), taskmoe::invalid_argument_error); };
  auto bias = random_floats(n, 33);
  err([&] { tk::packed_int8::pack({{q.data(), 10, k, s.data(), bias.data(), 1.0f}, {q.data(), 9, k, s.data(), nullptr, 1.0f}}, k); });
  err([&] { tk::packed_int8::pack({{q.data(), n, k - 1, s.data(), nullptr, 1.0f}}, k); });  // ldw < k
  err([&] { tk::packed_int8::pack({{q.data(), n, k, nullptr, nullptr, 1.0f}}, k); });
  err([&] { tk::gemm_packed_int8(3, a.data(), k - 1, direct, c1.data(), n); });
  err([&] { tk::gemm_packed_int8(3, a.data(), k, direct, c1.data(), n - 1); });
  err([&] { tk::gemm_packed_int8(3, a.data(), k, direct, c1.data(), n, {false, false, -1}); });
}

TEST_CASE("gemm_packed_f32 equals a plain fused-multiply-add reference bit for bit on every ISA") {
  // Around the 6-row / 16-column / 4- and 8-panel tiles, plus the decoder's shapes.
  const int shapes[][3] = {{1, 1, 1},     {1, 7, 3},    {3, 17, 7},    {7, 63, 63},   {63, 65, 65},
                           {65, 1000, 3}, {1, 1000, 64}, {2, 129, 1000}, {5, 48, 2049}, {1, 520, 512},
                           {6, 64, 4},    {13, 33, 129}, {12, 130, 9},  {64, 200, 17},
                           {80, 20, 520}};  // two row blocks (at least 64 rows each: 72 + 8)
  for (tk::isa isa : runnable_isas()) {
    tk::scoped_isa_override force(isa);
    for (const auto& s : shapes) {
      const int m = s[0], n = s[1], k = s[2];
      const int lda = k + 3, ldc = n + 2;
      for (int variant = 0; variant < 5; ++variant) {
        const bool relu = variant & 1, accumulate = variant & 2, with_bias = variant != 4;
        const int threads = variant == 3 ? 3 : 1;
        CAPTURE(std::string(tk::to_string(isa))); CAPTURE(m); CAPTURE(n); CAPTURE(k); CAPTURE(variant);
        const auto a = random_floats(static_cast<std::size_t>(m) * lda, 41 + variant, -2.0f, 2.0f);
        // Two stacked parts (fused QKV), the second with its own row stride.
        const int n1 = n / 2, n2 = n - n1, ldw2 = k + 5;
        const auto w1 = random_floats(static_cast<std::size_t>(n1) * k, 42);
        const auto w2 = random_floats(static_cast<std::size_t>(n2) * ldw2, 43);
        const auto bias = random_floats(n, 44);
        const auto packed = tk::packed_f32::pack(
            {{w1.data(), n1, k, with_bias ? bias.data() : nullptr},
             {w2.data(), n2, ldw2, with_bias ? bias.data() + n1 : nullptr}},
            k);
        REQUIRE(packed.rows() == n);
        REQUIRE(packed.cols() == k);
        const std::vector<float> before = random_floats(static_cast<std::size_t>(m) * ldc, 45);
        std::vector<float> c = before;
        tk::gemm_packed_f32(m, a.data(), lda, packed, c.data(), ldc, {relu, accumulate, threads});
        for (int i = 0; i < m; ++i) {
          for (int j = 0; j < n; ++j) {
            const float* wr = j < n1 ? w1.data() + static_cast<std::size_t>(j) * k
                                     : w2.data() + static_cast<std::size_t>(j - n1) * ldw2;
            float want = 0.0f;
            for (int p = 0; p < k; ++p) want = std::fma(a[i * lda + p], wr[p], want);
            if (with_bias) want = want + bias[j];
            if (relu && !(want > 0.0f)) want = 0.0f;
            if (accumulate) want = before[i * ldc + j] + want;
            REQUIRE(c[i * ldc + j] == want);
          }
          for (int j = n; j < ldc; ++j) REQUIRE(c[i * ldc + j] == before[i * ldc + j]);  // padding untouched
        }
      }
    }
  }
  const auto err = [](auto f) { CHECK_THROWS_AS(f(), taskmoe::invalid_argument_error); };
  const auto w = random_floats(19 * 45, 46), bias = random_floats(19, 47), a = random_floats(3 * 45, 48);
  std::vector<float> c(3 * 19);
  const auto packed = tk::packed_f32::pack({{w.data(), 19, 45, nullptr}}, 45);
  err([&] { tk::packed_f32::pack({{w.data(), 10, 45, bias.data()}, {w.data(), 9, 45, nullptr}}, 45); });
  err([&] { tk::packed_f32::pack({{w.data(), 19, 44, nullptr}}, 45); });  // ldw < k
  err([&] { tk::packed_f32::pack({{nullptr, 19, 45, nullptr}}, 45); });
  err([&] { tk::gemm_packed_f32(3, a.data(), 44, packed, c.data(), 19); });
  err([&] { tk::gemm_packed_f32(3, a.data(), 45, packed, c.data(), 18); });
  err([&] { tk::gemm_packed_f32(3, a.data(), 45, packed, c.data(), 19, {false, false, -1}); });
}

// The attention kernels on keys / values stored as T (float, or float16 bits: `store` converts a
// float, `load` gives back the value the kernels must see) against a double reference, for every
// head count, head width and key count given, keys in order and picked by row index (the decoder
// cache's slots: out of order, repeated).
template <class T, class Store, class Load>
void check_attention_kernels(const std::vector<int>& widths, const std::vector<int>& counts, Store store, Load load) {
  for (tk::isa isa : runnable_isas()) {
    tk::scoped_isa_override force(isa);
    for (bool indexed : {false, true})
      for (int heads : {1, 3, 8, 11})  // 11: past the key-major kernels' groups of 8 heads
        for (int dh : widths)
          for (int n : counts) {
            CAPTURE(std::string(tk::to_string(isa))); CAPTURE(indexed); CAPTURE(heads); CAPTURE(dh); CAPTURE(n);
            const int ld = heads * dh + 5, lds = n + 3, stored = indexed ? 2 * n + 3 : n;
            std::vector<int> rows(static_cast<std::size_t>(n));
            for (int j = 0; j < n; ++j) rows[static_cast<std::size_t>(j)] = indexed ? (7 * j + 3) % stored : j;
            const int* key_rows = indexed ? rows.data() : nullptr;
            const auto q = random_floats(static_cast<std::size_t>(heads) * dh, 51);
            const auto kf = random_floats(static_cast<std::size_t>(stored) * ld, 52, -4.0f, 4.0f);
            const auto vf = random_floats(static_cast<std::size_t>(stored) * ld, 53, -4.0f, 4.0f);
            const auto p = random_floats(static_cast<std::size_t>(heads) * lds, 54, 0.0f, 1.0f);
            std::vector<T> k(kf.size()), v(vf.size());
            for (std::size_t i = 0; i < kf.size(); ++i) k[i] = store(kf[i]);
            for (std::size_t i = 0; i < vf.size(); ++i) v[i] = store(vf[i]);
            const float scale = 1.7f;
            std::vector<float> s(static_cast<std::size_t>(heads) * lds, -7.0f), out(static_cast<std::size_t>(heads) * dh + 1, -7.0f);
            tk::attention_scores(q.data(), k.data(), ld, n, heads, dh, scale, s.data(), lds, key_rows);
            tk::attention_combine(p.data(), lds, v.data(), ld, n, heads, dh, out.data(), key_rows);
            for (int h = 0; h < heads; ++h) {
              for (int j = 0; j < n; ++j) {
                const int r = rows[static_cast<std::size_t>(j)];
                double want = 0.0;
                for (int c = 0; c < dh; ++c) want += double(q[h * dh + c]) * load(k[r * ld + h * dh + c]);
                REQUIRE(s[h * lds + j] == doctest::Approx(want / scale).epsilon(1e-5).scale(1.0));
              }
              for (int j = n; j < lds; ++j) REQUIRE(s[h * lds + j] == -7.0f);  // past n: untouched
              for (int c = 0; c < dh; ++c) {
                double want = 0.0;
                for (int j = 0; j < n; ++j) want += double(p[h * lds + j]) * load(v[rows[static_cast<std::size_t>(j)] * ld + h * dh + c]);
                REQUIRE(out[h * dh + c] == doctest::Approx(want).epsilon(1e-5).scale(1.0));
              }
            }
            REQUIRE(out.back() == -7.0f);  // nothing written past heads * dh
          }
  }
}

TEST_CASE("attention_scores and attention_combine match the plain reference on every ISA") {
  // dh around the 16-float register chunks (the key-major kernels take multiples of 8 on AVX2, of
  // 16 on AVX-512; others the head-major ones), past the 128 floats AVX-512 keeps q in registers for.
  check_attention_kernels<float>({1, 7, 8, 16, 24, 33, 64, 100, 130, 144}, {1, 2, 3, 17, 64},
                                 [](float x) { return x; }, [](float x) { return x; });
}

TEST_CASE("float16 keys and values: attention kernels match a reference on the decoded values, on every ISA") {
  // widths that are not multiples of 8 / 16 take the generic kernel
  check_attention_kernels<std::uint16_t>({1, 7, 8, 16, 24, 64, 100, 144}, {1, 2, 3, 5, 17, 64},
                                         [](float x) { return taskmoe::detail::f32_to_f16(x); },
                                         [](std::uint16_t h) { return taskmoe::detail::f16_to_f32(h); });
}

TEST_CASE("to_float16 rounds like the scalar converter on every ISA, tails and edge values included") {
  std::vector<float> x;
  for (float f : {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.0f, 65520.0f, -70000.0f, 6.1035156e-05f, 5.9604645e-08f,
                  2.9802322e-08f, 1e-10f, 1.0009765625f, 1.00048828125f, 1.00146484375f, 0.333333f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()})
    x.push_back(f);
  const auto r = random_floats(200, 65, -1000.0f, 1000.0f);
  x.insert(x.end(), r.begin(), r.end());
  for (tk::isa isa : runnable_isas()) {
    tk::scoped_isa_override force(isa);
    for (int n : {0, 1, 7, 8, 9, 15, 16, 17, 33, static_cast<int>(x.size())}) {
      CAPTURE(std::string(tk::to_string(isa))); CAPTURE(n);
      std::vector<std::uint16_t> y(static_cast<std::size_t>(n) + 1, 0xBEEF);
      tk::to_float16(x.data(), n, y.data());
      for (int i = 0; i < n; ++i) REQUIRE(y[static_cast<std::size_t>(i)] == taskmoe::detail::f32_to_f16(x[static_cast<std::size_t>(i)]));
      REQUIRE(y.back() == 0xBEEF);  // nothing written past n
    }
    std::uint16_t nan_out = 0;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    tk::to_float16(&nan, 1, &nan_out);
    REQUIRE(std::isnan(taskmoe::detail::f16_to_f32(nan_out)));
  }
}

TEST_CASE("from_float16 widens every float16 value like the scalar converter on every ISA, tails included") {
  std::vector<std::uint16_t> x(65536);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<std::uint16_t>(i);
  const auto same = [](float got, float want) {  // NaNs: any NaN (the hardware quietens signalling ones)
    return std::isnan(want) ? std::isnan(got) : std::memcmp(&got, &want, sizeof(float)) == 0;
  };
  for (tk::isa isa : runnable_isas()) {
    tk::scoped_isa_override force(isa);
    CAPTURE(std::string(tk::to_string(isa)));
    std::vector<float> y(x.size() + 1, -7.0f);
    tk::from_float16(x.data(), static_cast<int>(x.size()), y.data());
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < x.size(); ++i) wrong += !same(y[i], taskmoe::detail::f16_to_f32(x[i]));
    REQUIRE(wrong == 0);
    REQUIRE(y.back() == -7.0f);
    for (int n : {0, 1, 7, 8, 9, 15, 16, 17, 33}) {  // tails, from an odd offset
      CAPTURE(n);
      std::vector<float> t(static_cast<std::size_t>(n) + 1, -7.0f);
      tk::from_float16(x.data() + 15361, n, t.data());
      for (int i = 0; i < n; ++i) REQUIRE(same(t[static_cast<std::size_t>(i)], taskmoe::detail::f16_to_f32(x[static_cast<std::size_t>(15361 + i)])));
      REQUIRE(t.back() == -7.0f);  // nothing written past n
    }
  }
}

TEST_CASE("parallel_for covers [0, n) exactly once, from any number of callers, and rethrows") {
  for (int threads : {1, 2, 3, 8}) {
    for (int n : {0, 1, 2, 5, 100}) {
      std::vector<int> hits(static_cast<std::size_t>(n), 0);
      tk::parallel_for(threads, n, [&](int b, int e) {
        for (int i = b; i < e; ++i) ++hits[static_cast<std::size_t>(i)];
      });
      for (int h : hits) REQUIRE(h == 1);
    }
  }
  // Concurrent callers share the pool without deadlock or lost chunks.
  std::vector<std::thread> callers;
  std::atomic<long> total{0};
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int r = 0; r < 200; ++r)
        tk::parallel_for(3, 30, [&](int b, int e) { total += e - b; });
    });
  for (auto& c : callers) c.join();
  CHECK(total.load() == 4L * 200 * 30);
  CHECK_THROWS_AS(tk::parallel_for(2, 10, [](int b, int) { if (b > 0) throw std::runtime_error("chunk"); }),
                  std::runtime_error);
}

TEST_CASE("thread_share: workers that leave hand their threads to those still working") {
  CHECK(tk::intra_op_threads() == 1);
  tk::thread_share share(3, 2);
  {
    const tk::scoped_intra_op_threads scope(share);
    CHECK(tk::intra_op_threads() == 1);  // 3 threads over 2 workers: one each, as before
    share.leave();
    CHECK(tk::intra_op_threads() == 3);  // the last worker gets the whole budget
    {
      const tk::scoped_intra_op_threads inner(2);  // a fixed count nests and restores the share
      CHECK(tk::intra_op_threads() == 2);
    }
    CHECK(tk::intra_op_threads() == 3);
  }
  CHECK(tk::intra_op_threads() == 1);
  tk::thread_share four(4, 2);
  CHECK(four.per_worker() == 2);
  tk::thread_share bad(0, 0);  // clamped: never zero threads
  CHECK(bad.per_worker() == 1);
}

TEST_CASE("quantize_rows_int8 gives the generic kernel's bits on every ISA") {
  // Lengths around the 8- / 16- / 32-wide steps; values include exact halves (x * 127 / max
  // lands on k + 0.5: rounding half to even must agree), the row maximum in the tail, and one
  // row with a non-finite value at each position class (block and tail), which must throw.
  for (int n : {1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000, 2048}) {
    auto x = random_floats(static_cast<std::size_t>(n) * 3, 31 + n, -4.0f, 4.0f);
    x[0] = 127.0f;  // row 0: scale 1, so x = k + 0.5 are exact ties
    for (int j = 1; j < n; ++j) x[j] = static_cast<float>(j % 9) - 4.5f;
    x[2 * static_cast<std::size_t>(n) - 1] = -9.0f;  // row 1: its maximum in the last element
    std::vector<std::int8_t> want(x.size()), got(x.size());
    std::vector<float> want_s(3), got_s(3);
    {
      tk::scoped_isa_override force(tk::isa::generic);
      tk::quantize_rows_int8(x.data(), 3, n, n, want.data(), n, want_s.data());
    }
    for (tk::isa isa : runnable_isas()) {
      CAPTURE(std::string(tk::to_string(isa))); CAPTURE(n);
      tk::scoped_isa_override force(isa);
      tk::quantize_rows_int8(x.data(), 3, n, n, got.data(), n, got_s.data());
      CHECK(got == want);
      CHECK(got_s == want_s);
      for (int pos : {0, n - 1}) {
        auto bad = x;
        bad[static_cast<std::size_t>(n) + pos] = pos == 0 ? std::numeric_limits<float>::quiet_NaN()
                                                          : -std::numeric_limits<float>::infinity();
        CHECK_THROWS_AS(tk::quantize_rows_int8(bad.data(), 3, n, n, got.data(), n, got_s.data()),
                        taskmoe::invalid_argument_error);
      }
    }
  }
}

TEST_CASE("quantize_rows_int8: a row below 127 / FLT_MAX quantizes to zeros on every ISA (fuzz_tmoe)") {
  // tests/fuzz/regressions/tmoe/tiny-activation-row-int8-nan: 127 / max|x| overflowed to inf, so
  // 0 * inf = NaN was cast to int8 (UB; AVX2 tail and generic gave -127 instead of 0).
  std::vector<float> x(37, 0.0f);  // a 32-wide block and a tail
  x[3] = 1e-38f;
  x[35] = -2e-38f;
  for (tk::isa isa : runnable_isas()) {
    CAPTURE(static_cast<int>(isa));
    tk::scoped_isa_override force(isa);
    std::vector<std::int8_t> q(x.size(), 1);
    float scale = -1.0f;
    tk::quantize_rows_int8(x.data(), 1, static_cast<int>(x.size()), q.data(), &scale);
    CHECK(scale == 0.0f);
    for (std::int8_t v : q) CHECK(v == 0);
  }
}
