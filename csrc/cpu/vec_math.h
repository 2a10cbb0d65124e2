#pragma once
// What the per-capability sources (vec_kernels.cpp, bn_vec_kernels.cpp) share: the MathOps
// specialisation for at::vec::Vectorized, which lets the formulas of activations.h run on whole
// vectors, and the switch over the storage dtypes.
// Vectorized lives in a namespace named after the capability, so each compiled copy has its own
// specialisation. Include only from those sources, after defining CPU_CAPABILITY.

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/ScalarType.h>

#include "activations.h"

namespace swishkernels::math {
template <typename T>
struct MathOps<at::vec::Vectorized<T>> {
  using Vec = at::vec::Vectorized<T>;
  static Vec exp(const Vec& x) { return x.exp(); }
  static Vec min(const Vec& a, const Vec& b) { return at::vec::minimum(a, b); }  // NaN propagates
};
}  // namespace swishkernels::math

namespace swishkernels::cpu::CPU_CAPABILITY {
namespace {  // one copy per source file and capability: no inline code shared across capabilities

// Calls fn(scalar_t{}) for the storage type. The ops have already rejected other dtypes, and no
// error path here means no code is shared with the other capabilities' copies.
template <typename Fn>
void dispatch(c10::ScalarType dtype, const Fn& fn) {
  switch (dtype) {
    case c10::ScalarType::Half:
      return fn(c10::Half{});
    case c10::ScalarType::BFloat16:
      return fn(c10::BFloat16{});
    case c10::ScalarType::Float:
      return fn(float{});
    case c10::ScalarType::Double:
      return fn(double{});
    default:
      return;
  }
}

}  // namespace
}  // namespace swishkernels::cpu::CPU_CAPABILITY

namespace swishkernels::cpu::CPU_CAPABILITY {
namespace {

// exp(x), or exp(-x) with kNegate, for float vectors, inlined: the BatchNorm + activation kernels
// (bn_vec_kernels.cpp) evaluate it up to three times per element (forward, backward reduction,
// input gradient), where ATen's Sleef_expf16_u10 is an out-of-line call that spills the live
// vector registers (in a standalone loop on an AVX512 AMD EPYC, Swish's f and dy * f' with this exp
// took 0.61x and 0.67x the time they take with Sleef's). The elementwise kernels keep
// Vectorized::exp, so that sk.swish matches F.silu bit for bit.
//
// exp(x) = 2^n * p(r), n = round(x / ln 2), r = x - n ln 2 in two parts (Cody-Waite, |r| <= ln2/2),
// p a degree-6 minimax polynomial (relative error 1.9e-9). Checked against libm's double exp on
// every 7th float (2^32 / 7 inputs, both signs): at most 1.05 ulp, NaN -> NaN, exp(+inf) = inf,
// exp(-inf) = 0, overflow to inf and underflow as libm's rounded result, except that the AVX2 copy
// returns 0 for results below FLT_MIN (x < -87.34) instead of a subnormal (absolute error
// < 1.2e-38). With kNegate, exp(-x) is computed with the signs folded into the constants: the
// same bits as exp of the negated value, one instruction fewer.
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;  // few mantissa bits: n * kLn2Hi is exact
constexpr float kLn2Lo = 1.428606765330187045e-06f;
constexpr float kExpPoly[7] = {1.0f,                  1.0f,
                               0.49999991059303284f,  0.16666419804096222f,
                               0.04166822507977486f,  0.008374815806746483f,
                               0.0013836845755577087f};

template <bool kNegate>
constexpr float exp_coefficient(int k) {
  return (kNegate && (k & 1)) ? -kExpPoly[k] : kExpPoly[k];
}

template <bool kNegate>
C10_ALWAYS_INLINE at::vec::Vectorized<float> fast_exp(const at::vec::Vectorized<float>& v) {
#if defined(CPU_CAPABILITY_AVX512)
  // Clamped so that n stays small (r exact enough); vscalefps then overflows to inf and underflows
  // through the subnormals itself. max/min return their second operand for NaN: NaN stays.
  const __m512 x = _mm512_min_ps(_mm512_set1_ps(kNegate ? 104.0f : 89.0f),
                                 _mm512_max_ps(_mm512_set1_ps(kNegate ? -89.0f : -104.0f), v));
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kNegate ? -kLog2e : kLog2e)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r;
  if constexpr (kNegate) {  // r = -(x + n ln2), negated below through the odd coefficients
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(kLn2Lo), _mm512_fmadd_ps(n, _mm512_set1_ps(kLn2Hi), x));
  } else {
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x));
  }
  __m512 p = _mm512_set1_ps(exp_coefficient<kNegate>(6));
  for (int k = 5; k >= 0; --k) {
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_coefficient<kNegate>(k)));
  }
  return _mm512_scalef_ps(p, n);
#elif defined(CPU_CAPABILITY_AVX2)
  // Clamped to where 2^n * p is a normal float: n enters the exponent field by an integer add.
  // Beyond: inf (or NaN for NaN) above, 0 below.
  constexpr float kLo = -87.33654022216797f;  // n >= -126 and r >= 0 there
  constexpr float kHi = 88.72283172607422f;   // the largest float with exp(x) <= FLT_MAX
  const __m256 x = v;
  const __m256 xc = _mm256_min_ps(_mm256_set1_ps(kNegate ? -kLo : kHi),
                                  _mm256_max_ps(_mm256_set1_ps(kNegate ? -kHi : kLo), x));
  const __m256 shifter = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23: t's low bits hold n
  const __m256 t = _mm256_fmadd_ps(xc, _mm256_set1_ps(kNegate ? -kLog2e : kLog2e), shifter);
  const __m256 n = _mm256_sub_ps(t, shifter);
  __m256 r;
  if constexpr (kNegate) {
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(kLn2Lo), _mm256_fmadd_ps(n, _mm256_set1_ps(kLn2Hi), xc));
  } else {
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo),
                         _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), xc));
  }
  __m256 p = _mm256_set1_ps(exp_coefficient<kNegate>(6));
  for (int k = 5; k >= 0; --k) {
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_coefficient<kNegate>(k)));
  }
  const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(t), 23);
  __m256 y = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
  const __m256 big = kNegate ? _mm256_cmp_ps(x, _mm256_set1_ps(-kHi), _CMP_NGE_UQ)
                             : _mm256_cmp_ps(x, _mm256_set1_ps(kHi), _CMP_NLE_UQ);
  y = _mm256_blendv_ps(y, _mm256_mul_ps(x, _mm256_set1_ps(kNegate ? -INFINITY : INFINITY)), big);
  const __m256 tiny = kNegate ? _mm256_cmp_ps(x, _mm256_set1_ps(-kLo), _CMP_GT_OQ)
                              : _mm256_cmp_ps(x, _mm256_set1_ps(kLo), _CMP_LT_OQ);
  return _mm256_andnot_ps(tiny, y);
#else
  return (kNegate ? v.neg() : v).exp();
#endif
}

// activations.h's f and dy * f' on float vectors with fast_exp: the same formulas in the same
// evaluation order, only the exp replaced.
template <Activation A>
C10_ALWAYS_INLINE at::vec::Vectorized<float> fast_activation_forward(
    const at::vec::Vectorized<float>& z) {
  using M = at::vec::Vectorized<float>;
  if constexpr (A == Activation::Swish) {
    return z / (M(1) + fast_exp<true>(z));
  } else {
    return z * math::tanh_softplus(fast_exp<false>(at::vec::minimum(z, M(20))));
  }
}

template <Activation A>
C10_ALWAYS_INLINE at::vec::Vectorized<float> fast_activation_backward(
    const at::vec::Vectorized<float>& dy, const at::vec::Vectorized<float>& z) {
  using M = at::vec::Vectorized<float>;
  const M one(1);
  if constexpr (A == Activation::Swish) {
    const M s = one / (one + fast_exp<true>(z));
    return dy * s * (one + z * (one - s));
  } else {
    const M e = fast_exp<false>(at::vec::minimum(z, M(20)));
    const M t = math::tanh_softplus(e);
    const M s = e / (one + e);
    return dy * (t + z * s * (one - t * t));
  }
}

// Math vectors as double vectors: W of them per math vector, in lane order (the BatchNorm
// kernels' sums).
template <typename math_t>
struct Wide;

template <>
struct Wide<double> {
  using D = at::vec::Vectorized<double>;
  static constexpr int W = 1;
  static C10_ALWAYS_INLINE void apply(const D& v, D (&out)[1]) { out[0] = v; }
};

template <>
struct Wide<float> {
  using D = at::vec::Vectorized<double>;
  static constexpr int W = 2;
  static_assert(at::vec::Vectorized<float>::size() == 2 * D::size());
  static C10_ALWAYS_INLINE void apply(const at::vec::Vectorized<float>& v, D (&out)[2]) {
#if defined(CPU_CAPABILITY_AVX512)
    const __m512 x = v;
    out[0] = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    out[1] = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
#elif defined(CPU_CAPABILITY_AVX2)
    const __m256 x = v;
    out[0] = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    out[1] = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
#else
    constexpr int64_t F = at::vec::Vectorized<float>::size();
    __at_align__ float f[F];
    __at_align__ double d[F];
    v.store(f);
    for (int64_t j = 0; j < F; ++j) {
      d[j] = static_cast<double>(f[j]);
    }
    out[0] = D::loadu(d);
    out[1] = D::loadu(d + F / 2);
#endif
  }
};

}  // namespace
}  // namespace swishkernels::cpu::CPU_CAPABILITY
