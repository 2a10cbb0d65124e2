"""torch.library ops behind fused BatchNorm + activation (Swish, Mish), per backend.

Every backend offers the four passes over full-size tensors:
  bn_stats(x, shift, factor) -> (sum, sumsq)    per channel: sums of d and d^2, d = (x - shift_c) * factor_c
  bn_{act}_forward(x, scale, shift) -> y        y = f(x * scale_c + shift_c)
  bn_{act}_backward_reduce(dy, x, scale, shift, mean) -> (sum_dz, sum_dz_xmu)
                                                per channel: sums of dz and dz * (x - mean_c),
                                                dz = dy * f'(x * scale_c + shift_c)
  bn_{act}_backward_input(dy, x, scale, shift, coef_dz, coef_z, coef_0) -> dx
                                                dx = coef_dz_c * dz + coef_z_c * z + coef_0_c, z = x * scale_c + shift_c
x is 4-D (or any rank with channels in dim 1) and dense; per-channel tensors are fp32 (fp64 for fp64 x);
f is Swish or Mish (one op per activation; the statistics op is shared).

and two per-channel finishing steps, which BatchNormActFunction calls:
  finish_stats(x, weight, bias, running_mean, running_var, counter, momentum, eps, batch_stats)
      -> (mean, invstd, scale, shift)           batch or running statistics, z = x * scale + shift; updates the
                                                running statistics and increments `counter` in place
  finish_backward(dy, x, weight, bias, mean, invstd, batch_stats, param_dtype)
      -> (scale, shift, coef_z, coef_0, grad_weight, grad_bias)
The Triton backend does them in kernels (a training step's layer: 3 launches forward, 3 backward; launches
matter for small deep layers on a GPU); the others compose their passes with a few PyTorch ops.

Statistics never overflow where nn.BatchNorm2d's do not: the shifted values d are scaled by a power of two per
channel (exact, so normal inputs give the same numbers), chosen from the shift's magnitude, so d^2 stays finite
for fp32 values near 1e20; mean, variance and 1/std are finished in float64, and the running statistics are
blended in float64 before they are rounded to their own dtype (as nn.BatchNorm2d does: an fp16 batch
variance of 9e4 is never rounded to fp16's inf). BatchNorm's input gradient is written with z rather than x
(coef_z = coef_x / scale): its coefficient then stays a normal float where scale / std would underflow.
"""
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from . import _layout, backends

ACTIVATIONS = ("swish", "mish")


class BnOpSet(NamedTuple):
    stats: Callable
    forward: Callable
    backward_reduce: Callable
    backward_input: Callable
    finish_stats: Callable
    finish_backward: Callable


_acc_dtype = _layout.accumulation_dtype


def _first_sample(x):
    """x[0, c, 0, ...] per channel: the element of each channel at storage offset c * inner."""
    return x[(0, slice(None)) + (0,) * (x.dim() - 2)]


def stats_factor(shift: torch.Tensor) -> torch.Tensor:
    """Per channel, 2^-e for |shift| in [2^(e-1), 2^e), e clamped to [0, the largest that keeps 2^-e normal]:
    the statistics' power-of-two scale (bn_kernels._stats_factor computes the same bits)."""
    if shift.dtype == torch.float64:
        exponent = ((shift.view(torch.int64) >> 52) & 0x7FF) - 1022
        return ((1023 - exponent.clamp(0, 1022)) << 52).view(torch.float64)
    exponent = ((shift.view(torch.int32) >> 23) & 0xFF) - 126
    return ((127 - exponent.clamp(0, 126)) << 23).view(torch.float32)


def _scale_shift(mean, invstd, weight, bias):
    """BatchNorm's normalise-then-affine as one per-channel multiply-add: z = x * scale + shift."""
    scale = invstd if weight is None else weight.to(invstd.dtype) * invstd
    shift = -mean * scale if bias is None else bias.to(invstd.dtype) - mean * scale
    return scale, shift


def input_gradient_coefficients(scale, invstd, bias, sum_dz, sum_dz_xmu, count):
    """(coef_z, coef_0) of BatchNorm's input gradient with batch statistics over `count` positions per channel,
    dx = scale * dz + coef_z * z + coef_0 (= scale * (dz - mean(dz) - xhat * mean(dz * xhat)), xhat = (z - bias) /
    weight). Written with z rather than x: scale * invstd^2 underflows for inputs near 1e20."""
    coef_z = -invstd * (sum_dz_xmu * invstd) / count
    coef_0 = -scale * sum_dz / count
    if bias is not None:
        coef_0 = coef_0 - coef_z * bias.to(coef_z.dtype)
    return coef_z, coef_0


def _with_pytorch_finishing(stats, forward, backward_reduce, backward_input) -> BnOpSet:
    """The finishing steps as PyTorch algebra around a backend's reductions (backends without kernels for it)."""

    def finish_stats(x, weight, bias, running_mean, running_var, counter, momentum, eps, batch_stats):
        acc_dtype = _acc_dtype(x)
        if batch_stats:
            positions = x.numel() // x.size(1)
            shift = _first_sample(x).to(acc_dtype)  # shifting by a sample avoids cancellation in the variance
            factor = stats_factor(shift)
            total, total_sq = stats(x, shift, factor)
            # Finished in float64 (per channel: free): var / factor^2 may not fit in fp32, and rsqrt(var + eps) of
            # it still does.
            factor = factor.double()
            mean_scaled = total.double() / positions
            mean64 = shift.double() + mean_scaled / factor
            var = (total_sq.double() / positions - mean_scaled.square()).clamp_min(0) / factor.square()
            if counter is not None:
                counter.add_(1)
            if running_mean is not None:
                blend = momentum if momentum is not None else 1.0 / float(counter)
                with torch.no_grad():
                    unbiased = var * (positions / max(positions - 1, 1))
                    running_mean.copy_(running_mean.double().lerp_(mean64, blend))
                    running_var.copy_(running_var.double().lerp_(unbiased, blend))
            mean, invstd = mean64.to(acc_dtype), torch.rsqrt(var + eps).to(acc_dtype)
        else:
            mean, var = running_mean.to(acc_dtype), running_var.to(acc_dtype)
            invstd = torch.rsqrt(var + eps)
        return (mean, invstd, *_scale_shift(mean, invstd, weight, bias))

    def finish_backward(grad_output, x, weight, bias, mean, invstd, batch_stats, param_dtype):
        positions = x.numel() // x.size(1)
        scale, shift = _scale_shift(mean, invstd, weight, bias)
        sum_dz, sum_dz_xmu = backward_reduce(grad_output, x, scale, shift, mean)
        if batch_stats:  # batch statistics depend on x: BatchNorm's full input gradient
            coef_z, coef_0 = input_gradient_coefficients(scale, invstd, bias, sum_dz, sum_dz_xmu, positions)
        else:
            coef_z = coef_0 = torch.zeros_like(scale)
        param_dtype = param_dtype or scale.dtype
        return scale, shift, coef_z, coef_0, (sum_dz_xmu * invstd).to(param_dtype), sum_dz.to(param_dtype)

    return BnOpSet(stats, forward, backward_reduce, backward_input, finish_stats, finish_backward)


def _channel_fake(x, like):
    return torch.empty((x.size(1),), dtype=like.dtype, device=x.device)


# Fake (meta) implementations of the four passes, shared by the Python ops and the C++ ops.
def _fake_stats(x, shift, factor):
    _layout.check_dtype(x, "bn_stats")
    return _channel_fake(x, shift), _channel_fake(x, shift)


def _fake_forward(x, scale, shift):
    _layout.check_dtype(x, "bn_forward")
    return torch.empty_like(_layout.dense(x))


def _fake_backward_reduce(grad_output, x, scale, shift, mean):
    _layout.check_dtype(x, "bn_backward_reduce")
    return _channel_fake(x, scale), _channel_fake(x, scale)


def _fake_backward_input(grad_output, x, scale, shift, coef_dz, coef_z, coef_0):
    _layout.check_dtype(x, "bn_backward_input")
    return torch.empty_like(_layout.dense(x))


def _register_fakes(stats, forward, backward_reduce, backward_input) -> None:
    """stats may be None: the shared statistics op of a second activation already has its fake."""
    ops = (stats, forward, backward_reduce, backward_input)
    for op, fake in zip(ops, (_fake_stats, _fake_forward, _fake_backward_reduce, _fake_backward_input)):
        if op is not None:
            torch.library.register_fake(op, fake)


def _contiguous(*per_channel):
    # Kernels index per-channel vectors as plain arrays.
    return [t.contiguous() for t in per_channel]


def _contiguous_or_none(*tensors):
    return [None if t is None else t.contiguous() for t in tensors]


def _device_check(prefix: str, x: torch.Tensor) -> None:
    """A raw op called where its backend cannot run (a Triton op on a CPU tensor without the interpreter)
    says so in the project's words, not in the backend's ("0 active drivers")."""
    if prefix == "triton":
        backends.check_runnable("triton", x.device.type, "the triton BatchNorm ops")


def _define_stats_op(prefix: str, impl):
    @torch.library.custom_op(f"swishkernels::{prefix}_bn_swish_stats", mutates_args=())
    def stats(x: torch.Tensor, shift: torch.Tensor, factor: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        _layout.check_dtype(x, "bn_stats")
        _device_check(prefix, x)
        return impl.stats(_layout.dense(x), *_contiguous(shift, factor))

    return stats


def _define_python_ops(prefix: str, impl, activation: str, stats) -> BnOpSet:
    """impl: an object with stats/forward/backward_reduce/backward_input working on dense tensors (the last three
    take the activation's name), and finish_stats/finish_backward if it does the finishing itself. `stats`: the
    backend's statistics op, shared by its activations."""
    name = f"swishkernels::{prefix}_bn_{activation}"

    @torch.library.custom_op(f"{name}_forward", mutates_args=())
    def forward(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        _layout.check_dtype(x, f"bn_{activation}_forward")
        _device_check(prefix, x)
        x = _layout.dense(x)
        out = torch.empty_like(x)
        impl.forward(x, *_contiguous(scale, shift), out, activation)
        return out

    @torch.library.custom_op(f"{name}_backward_reduce", mutates_args=())
    def backward_reduce(grad_output: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                        mean: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        _device_check(prefix, x)
        x = _layout.dense(x)
        return impl.backward_reduce(_layout.like(grad_output, x), x, *_contiguous(scale, shift, mean), activation)

    @torch.library.custom_op(f"{name}_backward_input", mutates_args=())
    def backward_input(grad_output: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                       coef_dz: torch.Tensor, coef_z: torch.Tensor, coef_0: torch.Tensor) -> torch.Tensor:
        _device_check(prefix, x)
        x = _layout.dense(x)
        grad_input = torch.empty_like(x)
        impl.backward_input(_layout.like(grad_output, x), x, *_contiguous(scale, shift, coef_dz, coef_z, coef_0),
                            grad_input, activation)
        return grad_input

    _register_fakes(stats if activation == ACTIVATIONS[0] else None, forward, backward_reduce, backward_input)
    if not getattr(impl, "finishes_in_kernels", False):
        return _with_pytorch_finishing(stats, forward, backward_reduce, backward_input)

    # finish_stats does not depend on the activation: one op per backend, made with the first activation's set.
    finish_stats = _OPS[prefix][ACTIVATIONS[0]].finish_stats if activation != ACTIVATIONS[0] else None
    if finish_stats is None:
        @torch.library.custom_op(f"swishkernels::{prefix}_bn_swish_finish_stats",
                                 mutates_args=("running_mean", "running_var", "counter"))
        def finish_stats(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                         running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
                         counter: Optional[torch.Tensor], momentum: Optional[float], eps: float,
                         batch_stats: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            _layout.check_dtype(x, "bn_finish_stats")
            _device_check(prefix, x)
            return impl.finish_stats(_layout.dense(x), *_contiguous_or_none(weight, bias), running_mean,
                                     running_var, counter, momentum, eps, batch_stats)

        @finish_stats.register_fake
        def _(x, weight, bias, running_mean, running_var, counter, momentum, eps, batch_stats):
            return tuple(torch.empty((x.size(1),), dtype=_acc_dtype(x), device=x.device) for _ in range(4))

    @torch.library.custom_op(f"{name}_finish_backward", mutates_args=())
    def finish_backward(grad_output: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor],
                        bias: Optional[torch.Tensor], mean: torch.Tensor, invstd: torch.Tensor, batch_stats: bool,
                        param_dtype: Optional[torch.dtype]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                     torch.Tensor, torch.Tensor, torch.Tensor]:
        _device_check(prefix, x)
        x = _layout.dense(x)
        return impl.finish_backward(_layout.like(grad_output, x), x, *_contiguous_or_none(weight, bias),
                                    *_contiguous(mean, invstd), batch_stats, param_dtype, activation)

    @finish_backward.register_fake
    def _(grad_output, x, weight, bias, mean, invstd, batch_stats, param_dtype):
        per_channel = [torch.empty_like(mean) for _ in range(4)]
        return (*per_channel, *[torch.empty_like(mean, dtype=param_dtype or mean.dtype) for _ in range(2)])

    return BnOpSet(stats, forward, backward_reduce, backward_input, finish_stats, finish_backward)


class _ReferenceImpl:
    """PyTorch alone, on the [outer, C, inner] view of the storage (the same walk as the kernels)."""

    @staticmethod
    def _view(t, like):
        channels, inner, positions = _layout.channel_geometry(like)
        flat = t.as_strided((t.numel(),), (1,))
        return flat.view(positions // inner if inner else 0, channels, inner)

    @staticmethod
    def _per_channel(v):
        return v.view(1, -1, 1)

    def stats(self, x, shift, factor):
        d = (self._view(x, x).to(shift.dtype) - self._per_channel(shift)) * self._per_channel(factor)
        return d.sum((0, 2)), d.square().sum((0, 2))

    def _z(self, x, scale, shift):
        xv = self._view(x, x).to(scale.dtype)
        return xv, xv * self._per_channel(scale) + self._per_channel(shift)

    def forward(self, x, scale, shift, out, activation):
        _, z = self._z(x, scale, shift)
        self._view(out, x).copy_(F.silu(z) if activation == "swish" else F.mish(z))

    def _dz(self, grad_output, x, scale, shift, activation):
        xv, z = self._z(x, scale, shift)
        dy = self._view(grad_output, x).to(scale.dtype)
        if activation == "swish":
            s = torch.sigmoid(z)
            return xv, z, dy * s * (1 + z * (1 - s))
        t, s = torch.tanh(F.softplus(z)), torch.sigmoid(z)
        return xv, z, dy * (t + z * s * (1 - t * t))

    def backward_reduce(self, grad_output, x, scale, shift, mean, activation):
        xv, _, dz = self._dz(grad_output, x, scale, shift, activation)
        return dz.sum((0, 2)), (dz * (xv - self._per_channel(mean))).sum((0, 2))

    def backward_input(self, grad_output, x, scale, shift, coef_dz, coef_z, coef_0, grad_input, activation):
        _, z, dz = self._dz(grad_output, x, scale, shift, activation)
        dx = self._per_channel(coef_dz) * dz + self._per_channel(coef_z) * z + self._per_channel(coef_0)
        self._view(grad_input, x).copy_(dx)


class _TritonImpl:
    finishes_in_kernels = True

    def __getattr__(self, name):
        from .triton import bn_launch  # imports Triton only when this backend runs
        return getattr(bn_launch, name)


# backend -> activation -> its op set
_OPS: Dict[str, Dict[str, BnOpSet]] = {}


def _define_backend(prefix: str, impl) -> None:
    stats = _define_stats_op(prefix, impl)
    _OPS[prefix] = {}
    for activation in ACTIVATIONS:
        _OPS[prefix][activation] = _define_python_ops(prefix, impl, activation, stats)


_define_backend("triton", _TritonImpl())
_define_backend("reference", _ReferenceImpl())


def _extension_ops() -> Dict[str, BnOpSet]:
    """The C++ ops (already defined by swishkernels._C) given fake implementations."""
    namespace = torch.ops.swishkernels
    stats = namespace.bn_swish_stats.default
    sets = {}
    for activation in ACTIVATIONS:
        passes = [getattr(namespace, f"bn_{activation}_{p}").default
                  for p in ("forward", "backward_reduce", "backward_input")]
        _register_fakes(stats if activation == ACTIVATIONS[0] else None, *passes)
        sets[activation] = _with_pytorch_finishing(stats, *passes)
    return sets


# The fused layer's ops of the cpu backend (csrc/bn_swish_layer.cpp), one forward and one backward per activation:
#   bn_{act}_layer_forward(x, weight, bias, running_mean, running_var, counter, momentum, eps, batch_stats)
#       -> (y, mean, invstd, scale, shift)        finish_stats + forward in one op, autograd in C++
#   bn_{act}_layer_backward(dy, x, weight, bias, mean, invstd, batch_stats, output_mask)
#       -> (grad_input, grad_weight, grad_bias)   finish_backward + backward_input; None where the mask says no
LAYER_OPS: Dict[str, Tuple[Callable, Callable]] = {}


def _fake_layer_forward(x, weight, bias, running_mean, running_var, counter, momentum, eps, batch_stats):
    _layout.check_dtype(x, "bn_layer_forward")
    per_channel = [torch.empty((x.size(1),), dtype=_acc_dtype(x), device=x.device) for _ in range(4)]
    return (torch.empty_like(_layout.dense(x)), *per_channel)


def _fake_layer_backward(grad_output, x, weight, bias, mean, invstd, batch_stats, output_mask):
    def channel_grad(param):
        return torch.empty((x.size(1),), dtype=mean.dtype if param is None else param.dtype, device=x.device)

    return (torch.empty_like(_layout.dense(x)) if output_mask[0] else None,
            channel_grad(weight) if output_mask[1] else None, channel_grad(bias) if output_mask[2] else None)


def _extension_layer_ops() -> Dict[str, Tuple[Callable, Callable]]:
    namespace = torch.ops.swishkernels
    layer_ops = {}
    for activation in ACTIVATIONS:
        forward = getattr(namespace, f"bn_{activation}_layer_forward").default
        backward = getattr(namespace, f"bn_{activation}_layer_backward").default
        torch.library.register_fake(forward, _fake_layer_forward)
        torch.library.register_fake(backward, _fake_layer_backward)
        layer_ops[activation] = (forward, backward)
    return layer_ops


if backends.EXTENSION_ERROR is None and hasattr(torch.ops.swishkernels, "bn_mish_forward"):
    _OPS["cpu"] = _extension_ops()
    if hasattr(torch.ops.swishkernels, "bn_mish_layer_forward"):
        LAYER_OPS.update(_extension_layer_ops())


def resolve_name(backend: Optional[str], device: torch.device) -> str:
    """The backend whose fused BatchNorm ops run: automatic choice skips backends without fused BatchNorm
    kernels; a named one without them is an error, as with the activations."""
    name = backends.resolve(backend, device)
    if name in _OPS:
        return name
    if backends.requested(backend) is not None:
        raise RuntimeError(f"swishkernels: the {name} backend has no fused BatchNorm kernels; "
                           f"use one of {[b for b in _OPS if b in backends.available_backends(device.type)]}")
    return next(b for b in backends.available_backends(device.type) if b in _OPS)


def resolve(backend: Optional[str], device: torch.device, activation: str = "swish") -> BnOpSet:
    """Ops for the chosen backend (resolve_name)."""
    return _OPS[resolve_name(backend, device)][activation]
