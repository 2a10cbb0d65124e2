#pragma once
// Lets the formulas of activations.h run on whole vectors: the MathOps specialisation for
// at::vec::Vectorized, shared by the per-capability sources (vec_kernels.cpp, bn_vec_kernels.cpp).
// Vectorized lives in a namespace named after the capability, so each compiled copy has its own
// specialisation. Include only from those sources, after defining CPU_CAPABILITY.

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "activations.h"

namespace swishkernels::math {
template <typename T>
struct MathOps<at::vec::Vectorized<T>> {
  using Vec = at::vec::Vectorized<T>;
  static Vec exp(const Vec& x) { return x.exp(); }
  static Vec min(const Vec& a, const Vec& b) { return at::vec::minimum(a, b); }  // NaN propagates
};
}  // namespace swishkernels::math
