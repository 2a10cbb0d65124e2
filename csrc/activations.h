#pragma once
// The math of each activation, written once: forward f(x) and gradient dy * f'(x).
//
// T is the math type: float for float16/bfloat16/float32 storage, double for float64. The same
// templates are instantiated by the CUDA kernels (T = float/double) and by the CPU kernels
// (T = at::vec::Vectorized<float/double>, which specialise MathOps below). This header must stay
// free of torch includes so that `nvcc -c` compiles csrc/cuda/*.cu on its own.
//
// Inf and NaN inputs give exactly what ATen's F.silu / F.mish and their backward give (including
// NaN where ATen produces 0 * inf), and no finite input produces inf or NaN from an overflowing
// exp.

#include <math.h>

#if defined(__CUDACC__)
#define SWISHKERNELS_HOST_DEVICE __host__ __device__
#else
#define SWISHKERNELS_HOST_DEVICE
#endif

namespace swishkernels {

enum class Activation { Swish, Mish };

namespace math {

// The two primitives the formulas need beyond + - * /. Scalars use libm (CUDA's on the device);
// a SIMD type specialises this struct with its own exp and a NaN-propagating minimum.
template <typename T>
struct MathOps {
  SWISHKERNELS_HOST_DEVICE static float exp(float x) { return ::expf(x); }
  SWISHKERNELS_HOST_DEVICE static double exp(double x) { return ::exp(x); }
  // NaN in `a` propagates (the comparison is false).
  SWISHKERNELS_HOST_DEVICE static T min(T a, T b) { return b < a ? b : a; }
};

// Swish f(x) = x * sigmoid(x) = x / (1 + exp(-x)). Dividing instead of multiplying by the sigmoid
// saves a rounding and is the expression ATen's silu uses, so fp32 results match F.silu bit for bit
// where the exp is the same. exp(-x) overflows to inf for very negative x, giving x / inf = -0.
template <typename T>
SWISHKERNELS_HOST_DEVICE inline T swish_forward(T x) {
  return x / (T(1) + MathOps<T>::exp(-x));
}

// dy * f'(x) with f' = s * (1 + x * (1 - s)), s = sigmoid(x), in ATen's evaluation order.
template <typename T>
SWISHKERNELS_HOST_DEVICE inline T swish_backward(T dy, T x) {
  const T one(1);
  const T s = one / (one + MathOps<T>::exp(-x));
  return dy * s * (one + x * (one - s));
}

// Mish needs t = tanh(softplus(x)) = tanh(log(1 + e)), e = exp(x). With n = e * (e + 2),
// t = n / (n + 2): one exp and one division instead of exp, log1p and tanh. n overflows for
// x > ~44 (fp32), so the exp argument is clamped at 20, where t is already exactly 1 in fp32 and
// fp64 (2 / n < 2^-53).
template <typename T>
SWISHKERNELS_HOST_DEVICE inline T mish_exp(T x) {
  return MathOps<T>::exp(MathOps<T>::min(x, T(20)));
}

template <typename T>
SWISHKERNELS_HOST_DEVICE inline T tanh_softplus(T e) {
  const T two(2);
  const T n = e * (e + two);
  return n / (n + two);
}

// f(x) = x * t. For x = -inf, t = 0 and f = NaN, as in ATen.
template <typename T>
SWISHKERNELS_HOST_DEVICE inline T mish_forward(T x) {
  return x * tanh_softplus(mish_exp(x));
}

// dy * f'(x) with f' = t + x * s * (1 - t^2). The sigmoid comes from the same exp, s = e / (1 + e):
// exact to the rounding for x <= 20 and 1 - 2e-9 beyond, where it only multiplies 1 - t^2 = 0.
// At x = +inf that product is inf * 0 and f' = NaN, as in ATen.
template <typename T>
SWISHKERNELS_HOST_DEVICE inline T mish_backward(T dy, T x) {
  const T one(1);
  const T e = mish_exp(x);
  const T t = tanh_softplus(e);
  const T s = e / (one + e);
  return dy * (t + x * s * (one - t * t));
}

}  // namespace math
}  // namespace swishkernels
