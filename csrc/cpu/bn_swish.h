#pragma once
// CPU kernels of the fused BatchNorm + activation ops, Swish and Mish (bn_swish_ops.cpp checks
// the arguments).
//
// x is dense and walked as [outer, C, inner] in memory order; grad_output has x's strides;
// per-channel tensors are contiguous (C,) vectors of one dtype, float or double, which is also the
// math type. Reductions accumulate in double over chunks whose boundaries depend only on the shape,
// and combine the chunks in a fixed order: the result does not depend on the number of threads.
// The loops are vectorized, one copy per instruction set (bn_vec_kernels.h).

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "activations.h"

namespace swishkernels::cpu::bn {

struct Geometry {
  int64_t outer;
  int64_t channels;
  int64_t inner;
};

// sum and sumsq: (C,) outputs in the per-channel dtype, of d = (x - shift) * factor.
void stats(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& factor,
           const Geometry& g, const at::Tensor& sum, const at::Tensor& sumsq);
// The activation f is applied to z = x * scale + shift.
void forward(Activation f, const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
             const Geometry& g, const at::Tensor& y);
void backward_reduce(Activation f, const at::Tensor& grad_output, const at::Tensor& x,
                     const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& mean,
                     const Geometry& g, const at::Tensor& sum_dz, const at::Tensor& sum_dz_xmu);
void backward_input(Activation f, const at::Tensor& grad_output, const at::Tensor& x,
                    const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& coef_dz,
                    const at::Tensor& coef_z, const at::Tensor& coef_0, const Geometry& g,
                    const at::Tensor& grad_input);

// The same passes with per-channel values as raw arrays (the fused layer's ops, bn_swish_layer.cpp,
// finish the statistics in plain loops and make no per-channel tensors). The math type is implied by
// x: double for double x, float otherwise; each array holds C values zero-padded to a multiple of
// kChannelPad (bn_vec_kernels.h). Sums are written as C doubles.
void stats_raw(const at::Tensor& x, const void* shift, const void* factor, const Geometry& g,
               double* sum, double* sumsq);
void forward_raw(Activation f, const at::Tensor& x, const void* scale, const void* shift,
                 const Geometry& g, const at::Tensor& y);
void backward_reduce_raw(Activation f, const at::Tensor& grad_output, const at::Tensor& x,
                         const void* scale, const void* shift, const void* mean, const Geometry& g,
                         double* sum_dz, double* sum_dz_xmu);
// per_channel: scale, shift, coef_dz, coef_z, coef_0.
void backward_input_raw(Activation f, const at::Tensor& grad_output, const at::Tensor& x,
                        const void* const per_channel[5], const Geometry& g,
                        const at::Tensor& grad_input);

}  // namespace swishkernels::cpu::bn
