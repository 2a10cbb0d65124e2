// Typed (unboxed) dispatcher handles of the swishkernels ops, found once: shared by the autograd
// kernels (autograd.cpp) and the Python fast entry (module.cpp). A call through one of these goes
// through the whole dispatcher (autograd, autocast, Python modes, tracing) like torch.ops does,
// without the boxed argument parsing of a torch.ops call.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include "activations.h"

namespace swishkernels {

using ForwardSchema = at::Tensor(const at::Tensor&);
using BackwardSchema = at::Tensor(const at::Tensor&, const at::Tensor&);
using InplaceSchema = void(at::Tensor&);

template <typename Schema>
c10::TypedOperatorHandle<Schema> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Schema>();
}

inline const c10::TypedOperatorHandle<ForwardSchema>& forward_op(Activation act) {
  static const auto swish = find_op<ForwardSchema>("swishkernels::swish_forward");
  static const auto mish = find_op<ForwardSchema>("swishkernels::mish_forward");
  return act == Activation::Swish ? swish : mish;
}

inline const c10::TypedOperatorHandle<BackwardSchema>& backward_op(Activation act) {
  static const auto swish = find_op<BackwardSchema>("swishkernels::swish_backward");
  static const auto mish = find_op<BackwardSchema>("swishkernels::mish_backward");
  return act == Activation::Swish ? swish : mish;
}

inline const c10::TypedOperatorHandle<InplaceSchema>& forward_inplace_op(Activation act) {
  static const auto swish = find_op<InplaceSchema>("swishkernels::swish_forward_inplace");
  static const auto mish = find_op<InplaceSchema>("swishkernels::mish_forward_inplace");
  return act == Activation::Swish ? swish : mish;
}

inline const char* activation_name(Activation act) {
  return act == Activation::Swish ? "swish" : "mish";
}

}  // namespace swishkernels
