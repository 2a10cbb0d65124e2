// Vectorized CPU loops for every (activation, dtype) pair, in the namespace of the CPU capability
// this copy is compiled for (see vec_kernels.h). Built without capability flags, it is the
// portable DEFAULT.
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#endif

#include "cpu/vec_kernels.h"

#include "cpu/vec_math.h"

namespace swishkernels::cpu::CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Runs op on the math type: a Vectorized<Half/BFloat16> is computed as two float vectors.
template <typename scalar_t, typename Op>
C10_ALWAYS_INLINE Vectorized<scalar_t> apply(const Op& op, const Vectorized<scalar_t>& x) {
  if constexpr (c10::is_reduced_floating_point_v<scalar_t>) {
    const auto [x0, x1] = at::vec::convert_to_float<scalar_t>(x);
    return at::vec::convert_from_float<scalar_t>(op(x0), op(x1));
  } else {
    return op(x);
  }
}

template <typename scalar_t, typename Op>
C10_ALWAYS_INLINE Vectorized<scalar_t> apply(const Op& op, const Vectorized<scalar_t>& dy,
                           const Vectorized<scalar_t>& x) {
  if constexpr (c10::is_reduced_floating_point_v<scalar_t>) {
    const auto [dy0, dy1] = at::vec::convert_to_float<scalar_t>(dy);
    const auto [x0, x1] = at::vec::convert_to_float<scalar_t>(x);
    return at::vec::convert_from_float<scalar_t>(op(dy0, x0), op(dy1, x1));
  } else {
    return op(dy, x);
  }
}

// The scalar form of op for one element: reduced-precision storage is computed in float and rounded
// once, as ATen's scalar lambdas do. The scalar exp is libm's, as std::exp is in ATen.
template <typename scalar_t, typename Op, typename... In>
C10_ALWAYS_INLINE scalar_t apply_scalar(const Op& op, const In&... x) {
  if constexpr (c10::is_reduced_floating_point_v<scalar_t>) {
    return static_cast<scalar_t>(op(static_cast<float>(x)...));
  } else {
    return op(x...);
  }
}

// out[i] = op(in[i]...) for i < n with the loop of ATen's cpu_kernel_vec (ATen/native/cpu/Loops.h):
// two vectors per iteration, then the leftovers (fewer than two vectors) one by one in scalar
// code. Doing the tail the same way is what makes Swish equal to F.silu bit for bit at every size:
// libm's exp may round differently from the vector exp, so a partial-vector tail would differ from
// ATen's in those elements. device_kernels.cpp hands every piece but the last a multiple of 64
// elements, so only the end of the tensor has a tail, however many threads run.
template <typename scalar_t, typename Op, typename... In>
void map(const Op& op, scalar_t* out, int64_t n, const In*... in) {
  using Vec = Vectorized<scalar_t>;
  int64_t i = 0;
  for (; i + 2 * Vec::size() <= n; i += 2 * Vec::size()) {
    const Vec a = apply<scalar_t>(op, Vec::loadu(in + i)...);
    const Vec b = apply<scalar_t>(op, Vec::loadu(in + i + Vec::size())...);
    a.store(out + i);
    b.store(out + i + Vec::size());
  }
  for (; i < n; ++i) {
    out[i] = apply_scalar<scalar_t>(op, in[i]...);
  }
}

}  // namespace

void forward(Activation act, c10::ScalarType dtype, const void* x, void* y, int64_t n) {
  dispatch(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    const auto* in = static_cast<const scalar_t*>(x);
    auto* out = static_cast<scalar_t*>(y);
    switch (act) {
      case Activation::Swish:
        return map([](const auto& v) { return math::swish_forward(v); }, out, n, in);
      case Activation::Mish:
        return map([](const auto& v) { return math::mish_forward(v); }, out, n, in);
    }
  });
}

void backward(Activation act, c10::ScalarType dtype, const void* grad_output, const void* x,
              void* grad_input, int64_t n) {
  dispatch(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    const auto* dy = static_cast<const scalar_t*>(grad_output);
    const auto* in = static_cast<const scalar_t*>(x);
    auto* out = static_cast<scalar_t*>(grad_input);
    switch (act) {
      case Activation::Swish:
        return map([](const auto& g, const auto& v) { return math::swish_backward(g, v); }, out, n,
                   dy, in);
      case Activation::Mish:
        return map([](const auto& g, const auto& v) { return math::mish_backward(g, v); }, out, n,
                   dy, in);
    }
  });
}

}  // namespace swishkernels::cpu::CPU_CAPABILITY
