"""torch.library ops behind fused BatchNorm + Swish, per backend.

Every backend offers the four passes over full-size tensors:
  bn_stats(x, shift) -> (sum, sumsq)            per channel: sum of (x - shift) and of its square
  bn_swish_forward(x, scale, shift) -> y        y = swish(x * scale_c + shift_c)
  bn_swish_backward_reduce(dy, x, scale, shift, mean) -> (sum_dz, sum_dz_xmu)
                                                per channel: sums of dz and dz * (x - mean_c),
                                                dz = dy * swish'(x * scale_c + shift_c)
  bn_swish_backward_input(dy, x, scale, shift, coef_dz, coef_x, coef_0) -> dx
                                                dx = coef_dz_c * dz + coef_x_c * x + coef_0_c
x is 4-D (or any rank with channels in dim 1) and dense; per-channel tensors are fp32 (fp64 for fp64 x).

and two per-channel finishing steps, which BatchNormSwishFunction calls:
  finish_stats(x, weight, bias, running_mean, running_var, counter, momentum, eps, batch_stats)
      -> (mean, invstd, scale, shift)           batch or running statistics, z = x * scale + shift; updates the
                                                running statistics and increments `counter` in place
  finish_backward(dy, x, weight, bias, mean, invstd, batch_stats, param_dtype)
      -> (scale, shift, coef_x, coef_0, grad_weight, grad_bias)
The Triton backend does them in kernels (a training step's layer: 3 launches forward, 3 backward; launches
matter for small deep layers on a GPU); the others compose their passes with a few PyTorch ops.
"""
from typing import Callable, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from . import _layout, backends


class BnOpSet(NamedTuple):
    stats: Callable
    forward: Callable
    backward_reduce: Callable
    backward_input: Callable
    finish_stats: Callable
    finish_backward: Callable


def _acc_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _first_sample(x):
    """x[0, c, 0, ...] per channel: the element of each channel at storage offset c * inner."""
    return x[(0, slice(None)) + (0,) * (x.dim() - 2)]


def _scale_shift(mean, invstd, weight, bias):
    """BatchNorm's normalise-then-affine as one per-channel multiply-add: z = x * scale + shift."""
    scale = invstd if weight is None else weight.to(invstd.dtype) * invstd
    shift = -mean * scale if bias is None else bias.to(invstd.dtype) - mean * scale
    return scale, shift


def _with_pytorch_finishing(stats, forward, backward_reduce, backward_input) -> BnOpSet:
    """The finishing steps as PyTorch algebra around a backend's reductions (backends without kernels for it)."""

    def finish_stats(x, weight, bias, running_mean, running_var, counter, momentum, eps, batch_stats):
        acc_dtype = _acc_dtype(x)
        if batch_stats:
            positions = x.numel() // x.size(1)
            shift = _first_sample(x).to(acc_dtype)  # shifting by a sample avoids cancellation in the variance
            total, total_sq = stats(x, shift)
            mean_shifted = total / positions
            mean = shift + mean_shifted
            var = (total_sq / positions - mean_shifted.square()).clamp_min(0)
            if counter is not None:
                counter.add_(1)
            if running_mean is not None:
                factor = momentum if momentum is not None else 1.0 / float(counter)
                with torch.no_grad():
                    unbiased = var * (positions / max(positions - 1, 1))
                    running_mean.lerp_(mean.to(running_mean.dtype), factor)
                    running_var.lerp_(unbiased.to(running_var.dtype), factor)
        else:
            mean, var = running_mean.to(acc_dtype), running_var.to(acc_dtype)
        invstd = torch.rsqrt(var + eps)
        return (mean, invstd, *_scale_shift(mean, invstd, weight, bias))

    def finish_backward(grad_output, x, weight, bias, mean, invstd, batch_stats, param_dtype):
        positions = x.numel() // x.size(1)
        scale, shift = _scale_shift(mean, invstd, weight, bias)
        sum_dz, sum_dz_xmu = backward_reduce(grad_output, x, scale, shift, mean)
        if batch_stats:  # batch statistics depend on x: BatchNorm's full input gradient
            coef_x = -scale * invstd.square() * sum_dz_xmu / positions
            coef_0 = -scale * sum_dz / positions - coef_x * mean
        else:
            coef_x = coef_0 = torch.zeros_like(scale)
        param_dtype = param_dtype or scale.dtype
        return scale, shift, coef_x, coef_0, (sum_dz_xmu * invstd).to(param_dtype), sum_dz.to(param_dtype)

    return BnOpSet(stats, forward, backward_reduce, backward_input, finish_stats, finish_backward)


def _channel_fake(x, like):
    return torch.empty((x.size(1),), dtype=like.dtype, device=x.device)


def _contiguous(*per_channel):
    # Kernels index per-channel vectors as plain arrays.
    return [t.contiguous() for t in per_channel]


def _define_python_ops(prefix: str, impl) -> BnOpSet:
    """impl: an object with stats/forward/backward_reduce/backward_input working on dense tensors, and
    finish_stats/finish_backward if it does the finishing itself."""
    name = f"swishkernels::{prefix}_bn_swish"

    @torch.library.custom_op(f"{name}_stats", mutates_args=())
    def stats(x: torch.Tensor, shift: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        _layout.check_dtype(x, "bn_swish_stats")
        return impl.stats(_layout.dense(x), shift.contiguous())

    @stats.register_fake
    def _(x, shift):
        return _channel_fake(x, shift), _channel_fake(x, shift)

    @torch.library.custom_op(f"{name}_forward", mutates_args=())
    def forward(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        _layout.check_dtype(x, "bn_swish_forward")
        x = _layout.dense(x)
        out = torch.empty_like(x)
        impl.forward(x, *_contiguous(scale, shift), out)
        return out

    @forward.register_fake
    def _(x, scale, shift):
        return torch.empty_like(_layout.dense(x))

    @torch.library.custom_op(f"{name}_backward_reduce", mutates_args=())
    def backward_reduce(grad_output: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                        mean: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = _layout.dense(x)
        return impl.backward_reduce(_layout.like(grad_output, x), x, *_contiguous(scale, shift, mean))

    @backward_reduce.register_fake
    def _(grad_output, x, scale, shift, mean):
        return _channel_fake(x, scale), _channel_fake(x, scale)

    @torch.library.custom_op(f"{name}_backward_input", mutates_args=())
    def backward_input(grad_output: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                       coef_dz: torch.Tensor, coef_x: torch.Tensor, coef_0: torch.Tensor) -> torch.Tensor:
        x = _layout.dense(x)
        grad_input = torch.empty_like(x)
        impl.backward_input(_layout.like(grad_output, x), x, *_contiguous(scale, shift, coef_dz, coef_x, coef_0),
                            grad_input)
        return grad_input

    @backward_input.register_fake
    def _(grad_output, x, scale, shift, coef_dz, coef_x, coef_0):
        return torch.empty_like(_layout.dense(x))

    if not getattr(impl, "finishes_in_kernels", False):
        return _with_pytorch_finishing(stats, forward, backward_reduce, backward_input)

    @torch.library.custom_op(f"{name}_finish_stats", mutates_args=("running_mean", "running_var", "counter"))
    def finish_stats(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                     running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
                     counter: Optional[torch.Tensor], momentum: Optional[float], eps: float,
                     batch_stats: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        _layout.check_dtype(x, "bn_swish_finish_stats")
        return impl.finish_stats(_layout.dense(x), *_contiguous_or_none(weight, bias), running_mean, running_var,
                                 counter, momentum, eps, batch_stats)

    @finish_stats.register_fake
    def _(x, weight, bias, running_mean, running_var, counter, momentum, eps, batch_stats):
        return tuple(torch.empty((x.size(1),), dtype=_acc_dtype(x), device=x.device) for _ in range(4))

    @torch.library.custom_op(f"{name}_finish_backward", mutates_args=())
    def finish_backward(grad_output: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor],
                        bias: Optional[torch.Tensor], mean: torch.Tensor, invstd: torch.Tensor, batch_stats: bool,
                        param_dtype: Optional[torch.dtype]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                     torch.Tensor, torch.Tensor, torch.Tensor]:
        x = _layout.dense(x)
        return impl.finish_backward(_layout.like(grad_output, x), x, *_contiguous_or_none(weight, bias),
                                    *_contiguous(mean, invstd), batch_stats, param_dtype)

    @finish_backward.register_fake
    def _(grad_output, x, weight, bias, mean, invstd, batch_stats, param_dtype):
        per_channel = [torch.empty_like(mean) for _ in range(4)]
        return (*per_channel, *[torch.empty_like(mean, dtype=param_dtype or mean.dtype) for _ in range(2)])

    return BnOpSet(stats, forward, backward_reduce, backward_input, finish_stats, finish_backward)


def _contiguous_or_none(*tensors):
    return [None if t is None else t.contiguous() for t in tensors]


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

    def stats(self, x, shift):
        d = self._view(x, x).to(shift.dtype) - self._per_channel(shift)
        return d.sum((0, 2)), d.square().sum((0, 2))

    def forward(self, x, scale, shift, out):
        z = self._view(x, x).to(scale.dtype) * self._per_channel(scale) + self._per_channel(shift)
        self._view(out, x).copy_(F.silu(z))

    def _dz(self, grad_output, x, scale, shift):
        xv = self._view(x, x).to(scale.dtype)
        z = xv * self._per_channel(scale) + self._per_channel(shift)
        s = torch.sigmoid(z)
        return xv, self._view(grad_output, x).to(scale.dtype) * s * (1 + z * (1 - s))

    def backward_reduce(self, grad_output, x, scale, shift, mean):
        xv, dz = self._dz(grad_output, x, scale, shift)
        return dz.sum((0, 2)), (dz * (xv - self._per_channel(mean))).sum((0, 2))

    def backward_input(self, grad_output, x, scale, shift, coef_dz, coef_x, coef_0, grad_input):
        xv, dz = self._dz(grad_output, x, scale, shift)
        dx = self._per_channel(coef_dz) * dz + self._per_channel(coef_x) * xv + self._per_channel(coef_0)
        self._view(grad_input, x).copy_(dx)


class _TritonImpl:
    finishes_in_kernels = True

    def __getattr__(self, name):
        from .triton import bn_launch  # imports Triton only when this backend runs
        return getattr(bn_launch, name)


_OPS = {
    "triton": _define_python_ops("triton", _TritonImpl()),
    "reference": _define_python_ops("reference", _ReferenceImpl()),
}


def _extension_ops() -> BnOpSet:
    """The C++ ops (already defined by swishkernels._C) given fake implementations."""
    namespace = torch.ops.swishkernels
    ops = (namespace.bn_swish_stats.default, namespace.bn_swish_forward.default,
           namespace.bn_swish_backward_reduce.default, namespace.bn_swish_backward_input.default)

    def fake_stats(x, shift):
        _layout.check_dtype(x, "bn_swish_stats")
        return _channel_fake(x, shift), _channel_fake(x, shift)

    def fake_forward(x, scale, shift):
        _layout.check_dtype(x, "bn_swish_forward")
        return torch.empty_like(_layout.dense(x))

    def fake_backward_reduce(grad_output, x, scale, shift, mean):
        _layout.check_dtype(x, "bn_swish_backward_reduce")
        return _channel_fake(x, scale), _channel_fake(x, scale)

    def fake_backward_input(grad_output, x, scale, shift, coef_dz, coef_x, coef_0):
        _layout.check_dtype(x, "bn_swish_backward_input")
        return torch.empty_like(_layout.dense(x))

    for op, fake in zip(ops, (fake_stats, fake_forward, fake_backward_reduce, fake_backward_input)):
        torch.library.register_fake(op.name(), fake)
    return _with_pytorch_finishing(*ops)


if backends.EXTENSION_ERROR is None and hasattr(torch.ops.swishkernels, "bn_swish_stats"):
    _OPS["cpu"] = _extension_ops()


def resolve(backend: Optional[str], device: torch.device) -> BnOpSet:
    """Ops for the chosen backend. Automatic choice skips backends without BatchNorm+Swish kernels;
    a named one without them is an error, as with the activations."""
    explicit = backends.requested(backend) is not None
    name = backends.resolve(backend, device)
    if name in _OPS:
        return _OPS[name]
    if explicit:
        raise RuntimeError(f"swishkernels: the {name} backend has no BatchNorm+Swish kernels; "
                           f"use one of {[b for b in _OPS if b in backends.available_backends(device.type)]}")
    return _OPS[next(b for b in backends.available_backends(device.type) if b in _OPS)]
