// The fused BatchNorm + activation ops (swishkernels/bn_swish_ops.py documents them): schemas,
// argument checks and layout rules, registered for CPU. Fake kernels are registered from Python.
// bn_swish_stats is shared by every activation (the statistics do not depend on it); the other
// three exist once per activation: bn_swish_* and bn_mish_*.
//
// x is made dense if it is not and walked as [outer, C, inner] in memory order (C = x.size(1));
// grad_output is brought to x's dtype and strides; per-channel tensors are made contiguous and
// share the dtype of the first one (float or double), which is the math and output dtype.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "bn_op_helpers.h"

namespace swishkernels {
namespace {

using cpu::bn::Geometry;

using bn_ops::dense;
using bn_ops::geometry;
using bn_ops::grad_like;

// Contiguous (C,) vectors in the dtype of the first, which must be float32 or float64.
std::vector<at::Tensor> per_channel(const char* op, const at::Tensor& x,
                                    std::initializer_list<at::Tensor> tensors) {
  const c10::ScalarType dtype = tensors.begin()->scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              ": per-channel tensors must be float32 or float64, got ", dtype);
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : tensors) {
    TORCH_CHECK(t.device() == x.device(), op, ": a per-channel tensor is on ", t.device(),
                " but x is on ", x.device());
    TORCH_CHECK(t.numel() == x.size(1), op, ": per-channel tensors need ", x.size(1),
                " elements, got shape ", t.sizes());
    out.push_back(t.to(dtype).contiguous());
  }
  return out;
}

at::Tensor channel_output(const at::Tensor& x, const at::Tensor& like) {
  return at::zeros({x.size(1)}, like.options());
}

// The op names of activation f, for error messages.
template <Activation f>
struct Names;
template <>
struct Names<Activation::Swish> {
  static constexpr const char* forward = "swishkernels::bn_swish_forward";
  static constexpr const char* backward_reduce = "swishkernels::bn_swish_backward_reduce";
  static constexpr const char* backward_input = "swishkernels::bn_swish_backward_input";
};
template <>
struct Names<Activation::Mish> {
  static constexpr const char* forward = "swishkernels::bn_mish_forward";
  static constexpr const char* backward_reduce = "swishkernels::bn_mish_backward_reduce";
  static constexpr const char* backward_input = "swishkernels::bn_mish_backward_input";
};

std::tuple<at::Tensor, at::Tensor> bn_swish_stats(const at::Tensor& x_in,
                                                  const at::Tensor& shift_in,
                                                  const at::Tensor& factor_in) {
  constexpr const char* op = "swishkernels::bn_swish_stats";
  const at::Tensor x = dense(op, x_in);
  const auto pc = per_channel(op, x, {shift_in, factor_in});
  at::Tensor sum = channel_output(x, pc[0]), sumsq = channel_output(x, pc[0]);
  if (x.numel() > 0) {
    cpu::bn::stats(x, pc[0], pc[1], geometry(x), sum, sumsq);
  }
  return {sum, sumsq};
}

template <Activation f>
at::Tensor bn_act_forward(const at::Tensor& x_in, const at::Tensor& scale,
                          const at::Tensor& shift) {
  constexpr const char* op = Names<f>::forward;
  const at::Tensor x = dense(op, x_in);
  const auto pc = per_channel(op, x, {scale, shift});
  at::Tensor y = at::empty_like(x);
  if (x.numel() > 0) {
    cpu::bn::forward(f, x, pc[0], pc[1], geometry(x), y);
  }
  return y;
}

template <Activation f>
std::tuple<at::Tensor, at::Tensor> bn_act_backward_reduce(
    const at::Tensor& grad_output, const at::Tensor& x_in, const at::Tensor& scale,
    const at::Tensor& shift, const at::Tensor& mean) {
  constexpr const char* op = Names<f>::backward_reduce;
  const at::Tensor x = dense(op, x_in);
  const at::Tensor dy = grad_like(op, grad_output, x);
  const auto pc = per_channel(op, x, {scale, shift, mean});
  at::Tensor sum_dz = channel_output(x, pc[0]), sum_dz_xmu = channel_output(x, pc[0]);
  if (x.numel() > 0) {
    cpu::bn::backward_reduce(f, dy, x, pc[0], pc[1], pc[2], geometry(x), sum_dz, sum_dz_xmu);
  }
  return {sum_dz, sum_dz_xmu};
}

template <Activation f>
at::Tensor bn_act_backward_input(const at::Tensor& grad_output, const at::Tensor& x_in,
                                 const at::Tensor& scale, const at::Tensor& shift,
                                 const at::Tensor& coef_dz, const at::Tensor& coef_z,
                                 const at::Tensor& coef_0) {
  constexpr const char* op = Names<f>::backward_input;
  const at::Tensor x = dense(op, x_in);
  const at::Tensor dy = grad_like(op, grad_output, x);
  const auto pc = per_channel(op, x, {scale, shift, coef_dz, coef_z, coef_0});
  at::Tensor grad_input = at::empty_like(x);
  if (x.numel() > 0) {
    cpu::bn::backward_input(f, dy, x, pc[0], pc[1], pc[2], pc[3], pc[4], geometry(x), grad_input);
  }
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(swishkernels, m) {
  m.def("bn_swish_stats(Tensor x, Tensor shift, Tensor factor) -> (Tensor, Tensor)");
#define SWISHKERNELS_DEF_BN_ACT(act)                                                       \
  m.def("bn_" act "_forward(Tensor x, Tensor scale, Tensor shift) -> Tensor");             \
  m.def("bn_" act "_backward_reduce(Tensor grad_output, Tensor x, Tensor scale, "          \
        "Tensor shift, Tensor mean) -> (Tensor, Tensor)");                                 \
  m.def("bn_" act "_backward_input(Tensor grad_output, Tensor x, Tensor scale, "           \
        "Tensor shift, Tensor coef_dz, Tensor coef_z, Tensor coef_0) -> Tensor");
  SWISHKERNELS_DEF_BN_ACT("swish")
  SWISHKERNELS_DEF_BN_ACT("mish")
#undef SWISHKERNELS_DEF_BN_ACT
}

TORCH_LIBRARY_IMPL(swishkernels, CPU, m) {
  m.impl("bn_swish_stats", &bn_swish_stats);
  m.impl("bn_swish_forward", &bn_act_forward<Activation::Swish>);
  m.impl("bn_swish_backward_reduce", &bn_act_backward_reduce<Activation::Swish>);
  m.impl("bn_swish_backward_input", &bn_act_backward_input<Activation::Swish>);
  m.impl("bn_mish_forward", &bn_act_forward<Activation::Mish>);
  m.impl("bn_mish_backward_reduce", &bn_act_backward_reduce<Activation::Mish>);
  m.impl("bn_mish_backward_input", &bn_act_backward_input<Activation::Mish>);
}

}  // namespace swishkernels
