// Layout helpers shared by the fused BatchNorm + activation ops (bn_swish_ops.cpp: the four passes;
// bn_swish_layer.cpp: one op per direction).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

#include "cpu/bn_swish.h"
#include "op_checks.h"

namespace swishkernels::bn_ops {

// x itself when the kernels can walk its storage, else a contiguous copy.
inline at::Tensor dense(const char* op, const at::Tensor& x) {
  check_dtype(op, x);
  TORCH_CHECK(x.dim() >= 2, op, ": expected x with channels in dim 1, got shape ", x.sizes());
  return x.is_non_overlapping_and_dense() ? x : x.contiguous();
}

// x as [outer, C, inner] in memory order (same as swishkernels._layout.channel_geometry).
inline cpu::bn::Geometry geometry(const at::Tensor& x) {
  const int64_t channels = x.size(1);
  const int64_t positions = channels ? x.numel() / channels : 0;
  const int64_t inner = channels > 1 ? x.stride(1) : positions;
  return cpu::bn::Geometry{inner ? positions / inner : 0, channels, inner};
}

// grad_output in x's dtype and strides.
inline at::Tensor grad_like(const char* op, const at::Tensor& grad_output, const at::Tensor& x) {
  TORCH_CHECK(grad_output.device() == x.device(), op, ": grad_output is on ",
              grad_output.device(), " but x is on ", x.device());
  TORCH_CHECK(grad_output.sizes() == x.sizes(), op, ": grad_output has shape ",
              grad_output.sizes(), " but x has shape ", x.sizes());
  if (grad_output.scalar_type() == x.scalar_type() &&
      grad_output.is_non_overlapping_and_dense() && grad_output.strides() == x.strides()) {
    return grad_output;
  }
  at::Tensor grad = at::empty_like(x);
  grad.copy_(grad_output);
  return grad;
}

}  // namespace swishkernels::bn_ops
