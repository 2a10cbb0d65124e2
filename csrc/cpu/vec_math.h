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
