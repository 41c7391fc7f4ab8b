#pragma once
// The single-precision exp of the wide log_softmax kernels (arch/avx2.hpp, arch/avx512.hpp), in
// one place so the two widths cannot drift apart: Cephes' expf, about 1 ulp. exp(x) = 2^n * p(r),
// n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, so r stays exact), p(r) = 1 + r +
// r^2 (c0 r^5 + ... + c5) evaluated by Horner from coeffs[0].

namespace taskmoe {
namespace kernels {
namespace detail {
namespace exp_poly {

constexpr float log2e = 1.44269504088896341f;
constexpr float ln2_hi = 0.693359375f;
constexpr float ln2_lo = -2.12194440e-4f;
// Below this, 2^n would leave the normal floats; the kernels clamp there (exp = 2^-126, which no
// softmax sum >= 1 can see) instead of handling denormals.
constexpr float min_x = -87.33654f;
constexpr float coeffs[] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

}  // namespace exp_poly
}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe
