// The swishkernels ops: schemas, argument checks and layout rules, registered for CPU (and CUDA in
// builds with SWISHKERNELS_WITH_CUDA). Autograd is in autograd.cpp; fake (meta) kernels are
// registered from Python (swishkernels/ops.py).
//
// Layout: a non-overlapping and dense input (contiguous, channels_last, any permutation) is used as
// it is and the output gets its strides; anything else is made contiguous once. The backward brings
// grad_output to x's layout when it differs, so the kernels always walk flat storage.
#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "device_kernels.h"
#include "op_checks.h"

namespace swishkernels {
namespace {

void run_forward(Activation act, const at::Tensor& x, const at::Tensor& y) {
  if (x.numel() == 0) {
    return;
  }
#ifdef SWISHKERNELS_WITH_CUDA
  if (x.is_cuda()) {
    return cuda::forward(act, x, y);
  }
#endif
  cpu::forward(act, x, y);
}

void run_backward(Activation act, const at::Tensor& grad_output, const at::Tensor& x,
                  const at::Tensor& grad_input) {
  if (x.numel() == 0) {
    return;
  }
#ifdef SWISHKERNELS_WITH_CUDA
  if (x.is_cuda()) {
    return cuda::backward(act, grad_output, x, grad_input);
  }
#endif
  cpu::backward(act, grad_output, x, grad_input);
}

// x itself when the kernels can walk its storage, else a contiguous copy.
at::Tensor dense(const at::Tensor& x) {
  return x.is_non_overlapping_and_dense() ? x : x.contiguous();
}

at::Tensor forward(const char* op, Activation act, const at::Tensor& x) {
  check_dtype(op, x);
  const at::Tensor input = dense(x);
  at::Tensor y = at::empty_like(input);  // a dense input's strides are kept
  run_forward(act, input, y);
  return y;
}

at::Tensor backward(const char* op, Activation act, const at::Tensor& grad_output,
                    const at::Tensor& x) {
  check_dtype(op, x);
  TORCH_CHECK(grad_output.device() == x.device(), op, ": grad_output is on ",
              grad_output.device(), " but x is on ", x.device());
  TORCH_CHECK(grad_output.scalar_type() == x.scalar_type(), op, ": grad_output has dtype ",
              grad_output.scalar_type(), " but x has dtype ", x.scalar_type());
  TORCH_CHECK(grad_output.sizes() == x.sizes(), op, ": grad_output has shape ",
              grad_output.sizes(), " but x has shape ", x.sizes());
  const at::Tensor input = dense(x);
  at::Tensor grad = grad_output;
  if (!grad.is_non_overlapping_and_dense() || grad.strides() != input.strides()) {
    grad = at::empty_like(input);
    grad.copy_(grad_output);
  }
  at::Tensor grad_input = at::empty_like(input);
  run_backward(act, grad, input, grad_input);
  return grad_input;
}

void forward_inplace(const char* op, Activation act, at::Tensor& x) {
  check_dtype(op, x);
  if (x.is_non_overlapping_and_dense()) {
    return run_forward(act, x, x);
  }
  at::assert_no_internal_overlap(x);  // e.g. an expand()ed tensor: no well-defined result
  const at::Tensor tmp = x.contiguous();
  run_forward(act, tmp, tmp);
  x.copy_(tmp);
}

at::Tensor swish_forward(const at::Tensor& x) {
  return forward("swishkernels::swish_forward", Activation::Swish, x);
}
at::Tensor swish_backward(const at::Tensor& grad_output, const at::Tensor& x) {
  return backward("swishkernels::swish_backward", Activation::Swish, grad_output, x);
}
void swish_forward_inplace(at::Tensor& x) {
  forward_inplace("swishkernels::swish_forward_inplace", Activation::Swish, x);
}
at::Tensor mish_forward(const at::Tensor& x) {
  return forward("swishkernels::mish_forward", Activation::Mish, x);
}
at::Tensor mish_backward(const at::Tensor& grad_output, const at::Tensor& x) {
  return backward("swishkernels::mish_backward", Activation::Mish, grad_output, x);
}
void mish_forward_inplace(at::Tensor& x) {
  forward_inplace("swishkernels::mish_forward_inplace", Activation::Mish, x);
}

void register_impls(torch::Library& m) {
  m.impl("swish_forward", &swish_forward);
  m.impl("swish_backward", &swish_backward);
  m.impl("swish_forward_inplace", &swish_forward_inplace);
  m.impl("mish_forward", &mish_forward);
  m.impl("mish_backward", &mish_backward);
  m.impl("mish_forward_inplace", &mish_forward_inplace);
}

}  // namespace

TORCH_LIBRARY(swishkernels, m) {
  m.def("swish_forward(Tensor x) -> Tensor");
  m.def("swish_backward(Tensor grad_output, Tensor x) -> Tensor");
  m.def("swish_forward_inplace(Tensor(a!) x) -> ()");
  m.def("mish_forward(Tensor x) -> Tensor");
  m.def("mish_backward(Tensor grad_output, Tensor x) -> Tensor");
  m.def("mish_forward_inplace(Tensor(a!) x) -> ()");
}

TORCH_LIBRARY_IMPL(swishkernels, CPU, m) {
  register_impls(m);
}

#ifdef SWISHKERNELS_WITH_CUDA
TORCH_LIBRARY_IMPL(swishkernels, CUDA, m) {
  register_impls(m);
}
#endif

}  // namespace swishkernels
