// The fused layer's ops: one op per direction and activation, so that a training step of a
// BatchNormSwish2d / BatchNormMish2d on the cpu backend is two dispatcher calls (autograd in
// bn_swish_autograd.cpp), not two passes plus ~20 small ATen ops of per-channel algebra.
//
//   bn_{act}_layer_forward(x, weight?, bias?, running_mean?, running_var?, counter?, momentum?, eps,
//                          batch_stats) -> (y, mean, invstd, scale, shift)
//   bn_{act}_layer_backward(grad_output, x, weight?, bias?, mean, invstd, batch_stats, output_mask)
//                          -> (grad_input?, grad_weight?, grad_bias?)
//
// Same numbers as the four-pass ops finished by swishkernels/bn_swish_ops.py:_with_pytorch_finishing
// (that function documents the math: shifted, power-of-two-scaled statistics finished in float64,
// running statistics blended in float64, the input gradient written with z), here as plain loops
// over the C channels. Per-channel outputs are in the math dtype (float64 for float64 x, else
// float32); grad_weight and grad_bias in their parameter's dtype. running_mean, running_var and
// counter (num_batches_tracked) are updated in place with batch statistics.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/TypeCast.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

#include "bn_op_helpers.h"
#include "cpu/bn_vec_kernels.h"  // kChannelPad

namespace swishkernels {
namespace {

using bn_ops::dense;
using bn_ops::geometry;
using OptTensor = std::optional<at::Tensor>;

const at::Tensor& value_or_undefined(const OptTensor& t) {
  static const at::Tensor undefined;
  return t.has_value() ? *t : undefined;
}

template <Activation f>
struct LayerNames;
template <>
struct LayerNames<Activation::Swish> {
  static constexpr const char* forward = "swishkernels::bn_swish_layer_forward";
  static constexpr const char* backward = "swishkernels::bn_swish_layer_backward";
};
template <>
struct LayerNames<Activation::Mish> {
  static constexpr const char* forward = "swishkernels::bn_mish_layer_forward";
  static constexpr const char* backward = "swishkernels::bn_mish_layer_backward";
};

void check_channels(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  if (!t.defined()) {
    return;
  }
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but x is on ",
              x.device());
  TORCH_CHECK(t.dim() == 1 && t.numel() == x.size(1), op, ": ", name, " needs ", x.size(1),
              " elements (one per channel of x), got shape ", t.sizes());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name, " must be floating point, got ",
              t.scalar_type());
}

// t[c] for c < C as math_t, from any floating dtype and stride.
template <typename math_t>
void read_channels(const at::Tensor& t, math_t* out) {
  const int64_t C = t.numel(), stride = t.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "read_channels", [&] {
    const scalar_t* p = t.const_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) {
      out[c] = static_cast<math_t>(p[c * stride]);
    }
  });
}

// t[c] = values[c], converted as Tensor.copy_ converts.
template <typename value_t>
void write_channels(const at::Tensor& t, const value_t* values) {
  const int64_t C = t.numel(), stride = t.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "write_channels", [&] {
    scalar_t* p = t.data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) {
      p[c * stride] = c10::convert<scalar_t>(values[c]);
    }
  });
}

// bn_swish_ops.stats_factor: 2^-e for |shift| in [2^(e-1), 2^e), e clamped to [0, the largest that
// keeps 2^-e normal]; exact, so normal inputs give the same sums.
float stats_factor(float shift) {
  int32_t bits;
  std::memcpy(&bits, &shift, sizeof bits);
  const int32_t exponent = std::clamp(((bits >> 23) & 0xFF) - 126, 0, 126);
  const int32_t factor_bits = (127 - exponent) << 23;
  float factor;
  std::memcpy(&factor, &factor_bits, sizeof factor);
  return factor;
}

double stats_factor(double shift) {
  int64_t bits;
  std::memcpy(&bits, &shift, sizeof bits);
  const int64_t exponent = std::clamp<int64_t>(((bits >> 52) & 0x7FF) - 1022, 0, 1022);
  const int64_t factor_bits = (1023 - exponent) << 52;
  double factor;
  std::memcpy(&factor, &factor_bits, sizeof factor);
  return factor;
}

// ATen's lerp (ATen/native/Lerp.h) with a scalar weight.
double lerp(double self, double end, double weight) {
  return std::abs(weight) < 0.5 ? self + weight * (end - self) : end - (end - self) * (1 - weight);
}

int64_t padded(int64_t channels) {
  return (channels + cpu::bn::kChannelPad - 1) / cpu::bn::kChannelPad * cpu::bn::kChannelPad;
}

// Per-channel arrays for the kernels: `count` arrays of C values, each zero-padded (bn_swish.h).
template <typename math_t>
struct Channels {
  Channels(int64_t channels, int count) : pad(padded(channels)), data(pad * count, math_t(0)) {}
  math_t* operator[](int i) { return data.data() + i * pad; }
  int64_t pad;
  std::vector<math_t> data;
};

// z = x * scale + shift: BatchNorm's normalise-then-affine (bn_swish_ops._scale_shift).
template <typename math_t>
void scale_shift(const at::Tensor& weight, const at::Tensor& bias, const math_t* mean,
                 const math_t* invstd, int64_t C, math_t* scale, math_t* shift) {
  if (weight.defined()) {
    read_channels(weight, scale);
    for (int64_t c = 0; c < C; ++c) {
      scale[c] = scale[c] * invstd[c];
    }
  } else {
    std::copy(invstd, invstd + C, scale);
  }
  if (bias.defined()) {
    read_channels(bias, shift);
    for (int64_t c = 0; c < C; ++c) {
      const math_t product = mean[c] * scale[c];
      shift[c] = shift[c] - product;
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      shift[c] = -mean[c] * scale[c];
    }
  }
}

template <typename math_t>
void layer_forward_impl(Activation f, const at::Tensor& x, const at::Tensor& weight,
                        const at::Tensor& bias, const at::Tensor& running_mean,
                        const at::Tensor& running_var, const at::Tensor& counter,
                        std::optional<double> momentum, double eps, bool batch_stats,
                        const at::Tensor& y, const std::array<at::Tensor, 4>& out) {
  const int64_t C = x.size(1);
  const cpu::bn::Geometry g = geometry(x);
  Channels<math_t> ch(C, 2);  // the kernels' scale and shift
  math_t* mean = out[0].data_ptr<math_t>();
  math_t* invstd = out[1].data_ptr<math_t>();
  if (batch_stats) {
    const int64_t positions = C ? x.numel() / C : 0;
    // Shifted by x[0, c, 0, ...] (at storage offset c * stride(1)), scaled by a power of two.
    Channels<math_t> shifted(C, 2);
    if (x.numel() > 0) {
      const int64_t step = C > 1 ? x.stride(1) : 0;
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "first", [&] {
        const scalar_t* p = x.const_data_ptr<scalar_t>();
        for (int64_t c = 0; c < C; ++c) {
          shifted[0][c] = static_cast<math_t>(p[c * step]);
          shifted[1][c] = stats_factor(shifted[0][c]);
        }
      });
    }
    std::vector<double> sums(2 * C, 0.0), mean64(C), var64(C);
    if (x.numel() > 0) {
      cpu::bn::stats_raw(x, shifted[0], shifted[1], g, sums.data(), sums.data() + C);
    }
    const double n = static_cast<double>(positions);
    for (int64_t c = 0; c < C; ++c) {
      // The sums are rounded to the math dtype first, as the four-pass op's outputs are.
      const double total = static_cast<math_t>(sums[c]), total_sq = static_cast<math_t>(sums[C + c]);
      const double factor = shifted[1][c], mean_scaled = total / n;
      mean64[c] = static_cast<double>(shifted[0][c]) + mean_scaled / factor;
      const double spread = total_sq / n - mean_scaled * mean_scaled;
      var64[c] = (spread < 0.0 ? 0.0 : spread) / (factor * factor);  // NaN stays NaN
      mean[c] = static_cast<math_t>(mean64[c]);
      invstd[c] = static_cast<math_t>(1.0 / std::sqrt(var64[c] + eps));
    }
    if (counter.defined()) {
      counter.data_ptr<int64_t>()[0] += 1;
    }
    if (running_mean.defined() || running_var.defined()) {
      TORCH_CHECK(momentum.has_value() || counter.defined(), "bn_layer_forward: momentum=None (a "
                  "cumulative average) needs the counter");
      const double blend = momentum.has_value()
                               ? *momentum
                               : 1.0 / static_cast<double>(counter.const_data_ptr<int64_t>()[0]);
      const double unbias = n / static_cast<double>(std::max<int64_t>(positions - 1, 1));
      std::vector<double> old(C);
      if (running_mean.defined()) {
        read_channels(running_mean, old.data());
        for (int64_t c = 0; c < C; ++c) {
          old[c] = lerp(old[c], mean64[c], blend);
        }
        write_channels(running_mean, old.data());
      }
      if (running_var.defined()) {
        read_channels(running_var, old.data());
        for (int64_t c = 0; c < C; ++c) {
          old[c] = lerp(old[c], var64[c] * unbias, blend);
        }
        write_channels(running_var, old.data());
      }
    }
  } else {
    read_channels(running_mean, mean);
    read_channels(running_var, invstd);
    const math_t eps_m = static_cast<math_t>(eps);
    for (int64_t c = 0; c < C; ++c) {
      invstd[c] = math_t(1) / std::sqrt(invstd[c] + eps_m);  // in the math dtype, as torch.rsqrt
    }
  }
  scale_shift(weight, bias, mean, invstd, C, ch[0], ch[1]);
  std::copy(ch[0], ch[0] + C, out[2].data_ptr<math_t>());
  std::copy(ch[1], ch[1] + C, out[3].data_ptr<math_t>());
  if (x.numel() > 0) {
    cpu::bn::forward_raw(f, x, ch[0], ch[1], g, y);
  }
}

template <Activation f>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_forward(
    const at::Tensor& x_in, const OptTensor& weight_opt, const OptTensor& bias_opt,
    const OptTensor& running_mean_opt, const OptTensor& running_var_opt,
    const OptTensor& counter_opt, std::optional<double> momentum, double eps, bool batch_stats) {
  constexpr const char* op = LayerNames<f>::forward;
  const at::Tensor x = dense(op, x_in);
  const at::Tensor& weight = value_or_undefined(weight_opt);
  const at::Tensor& bias = value_or_undefined(bias_opt);
  const at::Tensor& running_mean = value_or_undefined(running_mean_opt);
  const at::Tensor& running_var = value_or_undefined(running_var_opt);
  const at::Tensor& counter = value_or_undefined(counter_opt);
  check_channels(op, "weight", weight, x);
  check_channels(op, "bias", bias, x);
  check_channels(op, "running_mean", running_mean, x);
  check_channels(op, "running_var", running_var, x);
  TORCH_CHECK(batch_stats || (running_mean.defined() && running_var.defined()), op,
              ": without batch statistics, running_mean and running_var are needed");
  TORCH_CHECK(!counter.defined() || (counter.scalar_type() == at::kLong && counter.numel() == 1 &&
                                     counter.device() == x.device()),
              op, ": counter must be one int64 on x's device");
  const bool is_double = x.scalar_type() == at::kDouble;
  const auto options = x.options().dtype(is_double ? at::kDouble : at::kFloat);
  const int64_t C = x.size(1);
  const std::array<at::Tensor, 4> out = {at::empty({C}, options), at::empty({C}, options),
                                         at::empty({C}, options), at::empty({C}, options)};
  at::Tensor y = at::empty_like(x);  // a dense input's strides are kept
  if (is_double) {
    layer_forward_impl<double>(f, x, weight, bias, running_mean, running_var, counter, momentum,
                               eps, batch_stats, y, out);
  } else {
    layer_forward_impl<float>(f, x, weight, bias, running_mean, running_var, counter, momentum,
                              eps, batch_stats, y, out);
  }
  return {y, out[0], out[1], out[2], out[3]};
}

template <typename math_t>
at::Tensor channel_tensor(const math_t* values, int64_t C, const at::Tensor& like, const at::Tensor& x) {
  at::Tensor t = at::empty({C}, x.options().dtype(like.defined() ? like.scalar_type()
                                                                 : c10::CppTypeToScalarType<math_t>::value));
  write_channels(t, values);
  return t;
}

template <typename math_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_backward_impl(
    Activation f, const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& bias, const at::Tensor& mean_t, const at::Tensor& invstd_t, bool batch_stats,
    std::array<bool, 3> mask) {
  const int64_t C = x.size(1);
  const int64_t positions = C ? x.numel() / C : 0;
  const cpu::bn::Geometry g = geometry(x);
  // scale, shift, mean, coef_z, coef_0 (the kernels' coef_dz is scale)
  Channels<math_t> ch(C, 5);
  std::vector<math_t> invstd(C);
  read_channels(mean_t, ch[2]);
  read_channels(invstd_t, invstd.data());
  scale_shift(weight, bias, ch[2], invstd.data(), C, ch[0], ch[1]);
  std::vector<math_t> sum_dz(C, math_t(0)), sum_dz_xmu(C, math_t(0));
  if ((mask[0] && batch_stats) || mask[1] || mask[2]) {
    std::vector<double> sums(2 * C, 0.0);
    if (x.numel() > 0) {
      cpu::bn::backward_reduce_raw(f, dy, x, ch[0], ch[1], ch[2], g, sums.data(), sums.data() + C);
    }
    for (int64_t c = 0; c < C; ++c) {  // rounded to the math dtype, as the four-pass op's outputs
      sum_dz[c] = static_cast<math_t>(sums[c]);
      sum_dz_xmu[c] = static_cast<math_t>(sums[C + c]);
    }
  }
  at::Tensor grad_input, grad_weight, grad_bias;
  if (mask[0]) {
    if (batch_stats) {  // batch statistics depend on x: BatchNorm's full input gradient
      std::vector<math_t> b(C, math_t(0));
      if (bias.defined()) {
        read_channels(bias, b.data());
      }
      const math_t count = static_cast<math_t>(positions);
      for (int64_t c = 0; c < C; ++c) {
        const math_t coef_z = -invstd[c] * (sum_dz_xmu[c] * invstd[c]) / count;
        math_t coef_0 = -ch[0][c] * sum_dz[c] / count;
        if (bias.defined()) {
          const math_t product = coef_z * b[c];
          coef_0 = coef_0 - product;
        }
        ch[3][c] = coef_z;
        ch[4][c] = coef_0;
      }
    }
    grad_input = at::empty_like(x);
    if (x.numel() > 0) {
      const void* per_channel[5] = {ch[0], ch[1], ch[0], ch[3], ch[4]};
      cpu::bn::backward_input_raw(f, dy, x, per_channel, g, grad_input);
    }
  }
  if (mask[1]) {
    std::vector<math_t> values(C);
    for (int64_t c = 0; c < C; ++c) {
      values[c] = sum_dz_xmu[c] * invstd[c];
    }
    grad_weight = channel_tensor(values.data(), C, weight, x);
  }
  if (mask[2]) {
    grad_bias = channel_tensor(sum_dz.data(), C, bias, x);
  }
  return {grad_input, grad_weight, grad_bias};
}

template <Activation f>
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_backward(
    const at::Tensor& grad_output, const at::Tensor& x_in, const OptTensor& weight_opt,
    const OptTensor& bias_opt, const at::Tensor& mean, const at::Tensor& invstd, bool batch_stats,
    std::array<bool, 3> output_mask) {
  constexpr const char* op = LayerNames<f>::backward;
  const at::Tensor x = dense(op, x_in);
  const at::Tensor dy = bn_ops::grad_like(op, grad_output, x);
  const at::Tensor& weight = value_or_undefined(weight_opt);
  const at::Tensor& bias = value_or_undefined(bias_opt);
  check_channels(op, "weight", weight, x);
  check_channels(op, "bias", bias, x);
  check_channels(op, "mean", mean, x);
  check_channels(op, "invstd", invstd, x);
  if (x.scalar_type() == at::kDouble) {
    return layer_backward_impl<double>(f, dy, x, weight, bias, mean, invstd, batch_stats, output_mask);
  }
  return layer_backward_impl<float>(f, dy, x, weight, bias, mean, invstd, batch_stats, output_mask);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(swishkernels, m) {
#define SWISHKERNELS_DEF_BN_LAYER(act)                                                          \
  m.def("bn_" act "_layer_forward(Tensor x, Tensor? weight, Tensor? bias, "                     \
        "Tensor(a!)? running_mean, Tensor(b!)? running_var, Tensor(c!)? counter, "             \
        "float? momentum, float eps, bool batch_stats) "                                        \
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");                                         \
  m.def("bn_" act "_layer_backward(Tensor grad_output, Tensor x, Tensor? weight, Tensor? bias, " \
        "Tensor mean, Tensor invstd, bool batch_stats, bool[3] output_mask) "                   \
        "-> (Tensor, Tensor, Tensor)");
  SWISHKERNELS_DEF_BN_LAYER("swish")
  SWISHKERNELS_DEF_BN_LAYER("mish")
#undef SWISHKERNELS_DEF_BN_LAYER
}

TORCH_LIBRARY_IMPL(swishkernels, CPU, m) {
  m.impl("bn_swish_layer_forward", &layer_forward<Activation::Swish>);
  m.impl("bn_swish_layer_backward", &layer_backward<Activation::Swish>);
  m.impl("bn_mish_layer_forward", &layer_forward<Activation::Mish>);
  m.impl("bn_mish_layer_backward", &layer_backward<Activation::Mish>);
}

}  // namespace swishkernels
