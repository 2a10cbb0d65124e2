"""Fused BatchNorm2d + Swish that saves only its input (plus per-channel mean and 1/std).

A Conv-BN-Swish block in eager PyTorch keeps three full-size tensors for backward (conv output for BN,
BN output for Swish, Swish output for the next conv); Conv-BN-LeakyReLU(inplace) keeps two. Here BN and
Swish are one autograd node that keeps only its input, so the block keeps two, and with
`recompute_bn_swish` the next layer's copy of the output is recomputed in backward instead of kept: one.
"""
import contextlib
from typing import Optional

import torch
import torch.nn as nn
from torch.utils.weak import WeakTensorKeyDictionary

from . import _layout, bn_ops, transforms


def _scale_shift(mean, invstd, weight, bias):
    """BatchNorm's normalise-then-affine as one per-channel multiply-add: z = x * scale + shift."""
    scale = invstd if weight is None else weight.to(invstd.dtype) * invstd
    shift = -mean * scale if bias is None else bias.to(invstd.dtype) - mean * scale
    return scale, shift


class BatchNormSwishFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, use_batch_stats, average_factor, eps, ops):
        x = _layout.dense(x)
        acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        channels = x.size(1)
        positions = x.numel() // channels
        if use_batch_stats:
            shift = x.select(0, 0).reshape(channels, -1)[:, 0].to(acc_dtype)  # one sample per channel
            total, total_sq = ops.stats(x, shift)
            mean_shifted = total / positions
            mean = shift + mean_shifted
            var = (total_sq / positions - mean_shifted.square()).clamp_min(0)
            if running_mean is not None:
                with torch.no_grad():
                    unbiased = var * (positions / max(positions - 1, 1))
                    running_mean.lerp_(mean.to(running_mean.dtype), average_factor)
                    running_var.lerp_(unbiased.to(running_var.dtype), average_factor)
        else:
            mean, var = running_mean.to(acc_dtype), running_var.to(acc_dtype)
        invstd = torch.rsqrt(var + eps)
        scale, shift = _scale_shift(mean, invstd, weight, bias)
        y = ops.forward(x, scale, shift)
        # Parameters are saved by reference (no copy); scale and shift are recomputed in backward.
        ctx.save_for_backward(x, mean, invstd, weight, bias)
        ctx.ops, ctx.use_batch_stats, ctx.positions = ops, use_batch_stats, positions
        ctx.param_dtype = None if weight is None else weight.dtype
        return y, scale, shift

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, _grad_scale, _grad_shift):
        x, mean, invstd, weight, bias = ctx.saved_tensors
        scale, shift = _scale_shift(mean, invstd, weight, bias)
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_output = _layout.like(grad_output, x)
        grad_x = grad_weight = grad_bias = None
        sum_dz = sum_dz_xmu = None
        if needs_weight or needs_bias or (needs_x and ctx.use_batch_stats):
            sum_dz, sum_dz_xmu = ctx.ops.backward_reduce(grad_output, x, scale, shift, mean)
        if needs_x:
            if ctx.use_batch_stats:  # batch statistics depend on x: BatchNorm's full input gradient
                coef_x = -scale * invstd.square() * sum_dz_xmu / ctx.positions
                coef_0 = -scale * sum_dz / ctx.positions - coef_x * mean
            else:
                coef_x = coef_0 = torch.zeros_like(scale)
            grad_x = ctx.ops.backward_input(grad_output, x, scale, shift, scale, coef_x, coef_0)
        if needs_weight:
            grad_weight = (sum_dz_xmu * invstd).to(ctx.param_dtype)
        if needs_bias:
            grad_bias = sum_dz.to(ctx.param_dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


# Outputs of BatchNormSwish2d modules in recompute mode -> how to recompute them from the saved input.
_RECOMPUTABLE = WeakTensorKeyDictionary()


class _Recompute:
    __slots__ = ("forward", "x", "scale", "shift")

    def __init__(self, forward, x, scale, shift):
        self.forward, self.x, self.scale, self.shift = forward, x, scale, shift


def pack_saved_tensor(tensor):
    """The recompute mode's pack hook: a recipe for BatchNormSwish2d(recompute=True) outputs, else the tensor."""
    recipe = _RECOMPUTABLE.get(tensor)
    return tensor if recipe is None else recipe


def unpack_saved_tensor(packed):
    if isinstance(packed, _Recompute):
        return packed.forward(packed.x, packed.scale, packed.shift)  # bit-identical: same kernel, same inputs
    return packed


@contextlib.contextmanager
def recompute_bn_swish():
    """While active, a layer that saves the output of a BatchNormSwish2d(recompute=True) for backward
    (the next convolution, for its weight gradient) keeps a recipe instead: the block's input, already
    saved by the block itself, plus per-channel scale and shift. Backward recomputes the output."""
    with torch.autograd.graph.saved_tensors_hooks(pack_saved_tensor, unpack_saved_tensor):
        yield


class BatchNormSwish2d(nn.BatchNorm2d):
    """Drop-in for nn.BatchNorm2d followed by Swish/SiLU: same constructor, same state_dict keys, same
    running-statistics updates. `recompute=True` marks outputs for `recompute_bn_swish`."""

    def __init__(self, num_features, eps=1e-5, momentum: Optional[float] = 0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, backend: Optional[str] = None,
                 recompute: bool = False):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.backend = backend
        self.recompute = recompute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if transforms.batch_norm_special_path():  # torch.func, forward AD, ONNX, jit.trace: PyTorch's ops
            return transforms.batch_norm_swish(self, x)
        self._check_input_dim(x)
        _layout.check_dtype(x, "BatchNormSwish2d")
        # Running-statistics bookkeeping exactly as nn.BatchNorm2d.forward does it.
        average_factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            average_factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if use_batch_stats and x.numel() // x.size(1) <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
        update_running = not self.training or self.track_running_stats
        ops = bn_ops.resolve(self.backend, x.device)
        y, scale, shift = BatchNormSwishFunction.apply(
            x, self.weight, self.bias,
            self.running_mean if update_running else None, self.running_var if update_running else None,
            use_batch_stats, average_factor, self.eps, ops)
        if self.recompute and y.requires_grad:
            _RECOMPUTABLE[y] = _Recompute(ops.forward, _layout.dense(x), scale.detach(), shift.detach())
        return y

    def extra_repr(self):
        extra = super().extra_repr()
        if self.backend is not None:
            extra += f", backend={self.backend!r}"
        return extra + (", recompute=True" if self.recompute else "")
