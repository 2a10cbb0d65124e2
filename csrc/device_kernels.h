#pragma once
// Tensor-level entry points of each device's kernels, called by ops.cpp. They run over the numel()
// elements of the flat storage, so every tensor passed must be non-overlapping and dense with the
// same strides as x (ops.cpp guarantees it), on one device, with one floating dtype and
// numel() > 0.
// An output may be the same tensor as an input (the in-place ops).

#include <ATen/core/Tensor.h>

#include "activations.h"

namespace swishkernels {

namespace cpu {
void forward(Activation act, const at::Tensor& x, const at::Tensor& y);
void backward(Activation act, const at::Tensor& grad_output, const at::Tensor& x,
              const at::Tensor& grad_input);
}  // namespace cpu

namespace cuda {  // defined only in builds with SWISHKERNELS_WITH_CUDA
void forward(Activation act, const at::Tensor& x, const at::Tensor& y);
void backward(Activation act, const at::Tensor& grad_output, const at::Tensor& x,
              const at::Tensor& grad_input);
}  // namespace cuda

}  // namespace swishkernels
