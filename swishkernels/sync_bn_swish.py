"""Fused BatchNorm + Swish with batch statistics synchronized over a torch.distributed process group.

`SyncBatchNormSwish2d` is to `BatchNormSwish2d` what `nn.SyncBatchNorm` is to `nn.BatchNorm2d`: in training,
mean and variance come from the batch of every process in the group, not the local one. It reuses the per-backend
passes of bn_swish_ops.py (stats, forward, backward_reduce, backward_input) and adds one collective per pass:

- forward: each process reduces its own batch (sums shifted by its first sample, as BatchNormSwish2d does, so the
  variance does not cancel) and one all_gather shares (count, mean, sum of squared deviations) per channel; every
  process combines them in float64 the same way (Chan's parallel formula), so all hold identical statistics.
  Gathered, not all-reduced: each process's shift is its own, and counts may differ between processes (a process
  may even have an empty batch), which is also why nn.SyncBatchNorm gathers.
- backward: one all_reduce of the two per-channel gradient sums (of dz and dz * (x - mean)), which the input
  gradient needs over the whole batch. Weight and bias gradients stay local: DDP averages them, as it does for
  nn.SyncBatchNorm.

It is a BatchNormSwish2d (so an nn.BatchNorm2d), not an nn.SyncBatchNorm: DDP refuses nn.SyncBatchNorm on CPU, and
this layer works there (gloo) as on GPUs (NCCL). In eval mode, with world size 1 or without an initialised process
group it is exactly BatchNormSwish2d and issues no collective.

`convert_sync_bn_swish(model)` turns fused layers into synchronized ones (and other BatchNorms into
nn.SyncBatchNorm); `revert_sync_bn_swish(model)` undoes it for saving or single-device evaluation.
"""
import contextlib
import types
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from . import _layout, bn_swish, bn_swish_ops, special_paths
from .bn_swish import BatchNormMish2d, BatchNormSwish2d, _FusedBatchNormAct2d
from .bn_swish_ops import _acc_dtype, _first_sample, _scale_shift


def _gather(local: torch.Tensor, group) -> torch.Tensor:
    """(world, n) from every process's (n,) tensor: one collective."""
    world = dist.get_world_size(group)
    if dist.get_backend(group) == "gloo":  # gloo has no all_gather_into_tensor
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local, group=group)
        return torch.stack(parts)
    out = local.new_empty((world, local.numel()))
    dist.all_gather_into_tensor(out, local, group=group)
    return out


def _local_stats(x: torch.Tensor, ops) -> torch.Tensor:
    """[count, mean (C), sum of squared deviations (C)] of this process's batch, float64."""
    channels = x.size(1)
    positions = x.numel() // channels if channels else 0
    if positions == 0:  # an empty batch still joins the collective, with zero weight
        return x.new_zeros(2 * channels + 1, dtype=torch.float64)
    shift = _first_sample(x).to(_acc_dtype(x))
    factor = bn_swish_ops.stats_factor(shift)  # a power of two: d^2 stays finite for inputs near 1e20
    total, total_sq = ops.stats(x, shift, factor)
    factor = factor.double()
    mean_shifted = total.double() / positions
    deviations = (total_sq.double() - total.double() * mean_shifted).clamp_min(0) / factor.square()
    count = torch.full((1,), float(positions), dtype=torch.float64, device=x.device)
    return torch.cat([count, shift.double() + mean_shifted / factor, deviations])


def _global_stats(x: torch.Tensor, ops, group):
    """(mean, biased variance, count) per channel over the batches of the whole group."""
    channels = x.size(1)
    gathered = _gather(_local_stats(x, ops), group)
    counts, means, deviations = gathered[:, :1], gathered[:, 1:channels + 1], gathered[:, channels + 1:]
    count = counts.sum()
    mean = (counts * means).sum(0) / count
    deviations = deviations.sum(0) + (counts * (means - mean).square()).sum(0)
    return mean, deviations / count, count


class SyncBatchNormSwishFunction(torch.autograd.Function):
    """BatchNormActFunction (Swish) with the statistics and the input gradient's sums taken over `group`.
    Saves the same tensors: x, per-channel mean and invstd, and the parameters by reference."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, counter, momentum, eps, ops, group):
        x = _layout.dense(x)
        acc_dtype = _acc_dtype(x)
        mean, var, count = _global_stats(x, ops, group)
        if counter is not None:
            counter.add_(1)
        if running_mean is not None:
            factor = momentum if momentum is not None else 1.0 / float(counter)
            unbiased = var * count / (count - 1).clamp_min(1)  # over the global batch, as nn.SyncBatchNorm
            # Blended in float64, then rounded (as nn.BatchNorm2d: an fp16 variance past fp16's range stays finite).
            running_mean.copy_(running_mean.double().lerp_(mean, factor))
            running_var.copy_(running_var.double().lerp_(unbiased, factor))
        mean, invstd = mean.to(acc_dtype), torch.rsqrt(var + eps).to(acc_dtype)
        scale, shift = _scale_shift(mean, invstd, weight, bias)
        y = ops.forward(x, scale, shift) if x.numel() else torch.empty_like(x)
        ctx.save_for_backward(x, mean, invstd, weight, bias)
        ctx.ops, ctx.group, ctx.count = ops, group, count.to(acc_dtype)  # count: one number, not saved per element
        ctx.param_dtype = None if weight is None else weight.dtype
        ctx.mark_non_differentiable(scale, shift)
        ctx.set_materialize_grads(False)
        return y, scale, shift

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, _grad_scale, _grad_shift):
        x, mean, invstd, weight, bias = ctx.saved_tensors
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        scale, shift = _scale_shift(mean, invstd, weight, bias)
        if grad_output is None or x.numel() == 0:  # nothing flows back here, but the collective needs us
            sum_dz, sum_dz_xmu = torch.zeros_like(mean), torch.zeros_like(mean)
        else:
            grad_output = _layout.like(grad_output, x)
            sum_dz, sum_dz_xmu = ctx.ops.backward_reduce(grad_output, x, scale, shift, mean)
        param_dtype = ctx.param_dtype or scale.dtype
        grad_weight = (sum_dz_xmu * invstd).to(param_dtype) if needs_weight else None
        grad_bias = sum_dz.to(param_dtype) if needs_bias else None
        grad_x = None
        if needs_x:  # the same on every process: each holds the same graph
            sums = torch.cat([sum_dz, sum_dz_xmu])
            dist.all_reduce(sums, group=ctx.group)
            sum_dz, sum_dz_xmu = sums.chunk(2)
            coef_z, coef_0 = bn_swish_ops.input_gradient_coefficients(scale, invstd, bias, sum_dz, sum_dz_xmu,
                                                                       ctx.count)
            if grad_output is None:
                grad_x = None
            elif x.numel() == 0:
                grad_x = torch.empty_like(x)
            else:
                grad_x = ctx.ops.backward_input(grad_output, x, scale, shift, scale, coef_z, coef_0)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None, None


class _Synchronized:
    """What a fused BatchNorm+activation class gains when synchronized (mixed in before it): nn.SyncBatchNorm's
    constructor (process_group included) and statistics over the group in training."""

    def __init__(self, num_features, eps=1e-5, momentum: Optional[float] = 0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None, *,
                 backend: Optional[str] = None, recompute: bool = False):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         backend=backend, recompute=recompute)
        self.process_group = process_group

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def sync_group(self):
        """The process group this forward synchronizes over, or None (eval mode, world size 1, no group)."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    # A fused pair whose activation slot was replaced (or under torch.compile) is a plain BatchNorm: locally
    # nn.BatchNorm2d's forward, with a process group nn.SyncBatchNorm's (which refuses CPU tensors).
    _check_non_zero_input_channels = nn.SyncBatchNorm._check_non_zero_input_channels

    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        if self.sync_group() is None:
            return super()._forward_plain(x)
        return nn.SyncBatchNorm.forward(self, x)

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNormSwish2d.forward calls this (and keeps a fused pair's contract: fused_pair.py)
        group = self.sync_group()
        if group is None:
            return super()._forward_fused(x)
        if special_paths.batch_norm_special_path():
            raise RuntimeError(f"{type(self).__name__}: training with a process group under torch.func, forward-mode "
                               "AD, ONNX export or torch.jit.trace is not supported; call "
                               "sk.revert_sync_bn_swish(model) first, or use eval mode")
        self._check_input_dim(x)
        _layout.check_dtype(x, type(self).__name__)
        # Training only (eval never synchronizes): the running statistics' bookkeeping of BatchNormSwish2d.
        counter = self.num_batches_tracked if self.track_running_stats else None
        tracked = self.track_running_stats
        ops = bn_swish_ops.resolve(self.backend, x.device, self.activation)
        y, scale, shift = SyncBatchNormSwishFunction.apply(
            x, self.weight, self.bias, self.running_mean if tracked else None, self.running_var if tracked else None,
            counter, self.momentum, self.eps, ops, group)
        if self.recompute and y.requires_grad and not torch.compiler.is_compiling():
            bn_swish.record_recomputable(y, ops.forward, _layout.dense(x), scale, shift)
        return y


class SyncBatchNormSwish2d(_Synchronized, BatchNormSwish2d):
    """Drop-in for nn.SyncBatchNorm followed by Swish/SiLU: nn.SyncBatchNorm's constructor (process_group
    included), BatchNormSwish2d's saved tensors, state_dict keys, `backend` and `recompute`. Accepts what
    nn.SyncBatchNorm accepts: inputs of 2 or more dimensions, channels in dim 1."""


class SyncBatchNormMish2d(_Synchronized, BatchNormMish2d):
    """Drop-in for nn.SyncBatchNorm followed by Mish: as SyncBatchNormSwish2d, with BatchNormMish2d's math."""


# The synchronized class for each fused activation, and the fused class to go back to.
SYNCHRONIZED = {"swish": SyncBatchNormSwish2d, "mish": SyncBatchNormMish2d}
UNSYNCHRONIZED = {SyncBatchNormSwish2d: BatchNormSwish2d, SyncBatchNormMish2d: BatchNormMish2d}


# ---- converting a model ------------------------------------------------------------------------------------

_PLAIN_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _framework_converter(module: nn.Module):
    """The sync_batchnorm(module, process_group) of the integration module for `module`'s framework, if any."""
    import importlib

    from .fusion import INTEGRATIONS  # fusion imports this module: imported here, when converting
    name = INTEGRATIONS.get(type(module).__module__.partition(".")[0])
    return getattr(importlib.import_module(name), "sync_batchnorm", None) if name else None


def convert_sync_bn_swish(module: nn.Module, process_group: Optional[Any] = None) -> nn.Module:
    """nn.SyncBatchNorm.convert_sync_batchnorm for fused models: every BatchNormSwish2d becomes a
    SyncBatchNormSwish2d in place (same module object, Parameters, buffers, hooks and state_dict keys: an
    optimizer or EMA built before keeps working); every plain nn.BatchNorm{1,2,3}d becomes an nn.SyncBatchNorm
    and a framework's norm-act layer its framework's synchronized one (timm: SyncBatchNormAct), sharing its
    Parameters and buffers, as PyTorch's and timm's converters do (PyTorch runs those on GPUs only). Other
    BatchNorm subclasses are an error: their own forward would be lost. Returns the module (a new one only
    when `module` itself is an unfused BatchNorm). Convert before wrapping the model in DDP."""
    if isinstance(module, _FusedBatchNormAct2d) and not isinstance(module, _Synchronized):
        synced_class = SYNCHRONIZED.get(module.activation)
        if synced_class is None or type(module).forward is not _FusedBatchNormAct2d.forward:
            raise ValueError(f"convert_sync_bn_swish: {type(module).__name__} has its own forward, which "
                             "synchronizing would replace")
        module._sk_unsynced_class = type(module)
        module.__class__ = synced_class
        module.process_group = process_group
        return module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.SyncBatchNorm):
        converter = _framework_converter(module)
        synced = converter(module, process_group) if converter is not None else None
        if synced is None and type(module) in _PLAIN_BATCH_NORMS:
            synced = nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
        if synced is None:
            raise ValueError(f"convert_sync_bn_swish: {type(module).__name__} is a BatchNorm subclass with its own "
                             "behaviour and no known synchronized version; convert it with its framework's "
                             "converter, or fuse it first with sk.fuse_bn_swish")
        synced.__dict__["_sk_unsynced"] = module  # not a submodule: kept out of modules() and state_dict
        return synced
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = convert_sync_bn_swish(child, process_group)
    return module


def revert_sync_bn_swish(module: nn.Module) -> nn.Module:
    """Undo synchronization, for saving or single-device evaluation: every SyncBatchNormSwish2d becomes
    the fused class it was converted from (BatchNormSwish2d when fuse_bn_swish made it from an
    nn.SyncBatchNorm; unfuse_bn_swish then gives an nn.BatchNorm2d), in place; layers that
    convert_sync_bn_swish replaced are put back (the original objects, holding the current Parameters and
    buffers). Other nn.SyncBatchNorm layers are left alone (in eval mode and without a process group they
    compute locally). Returns the module (a different one only when `module` itself was replaced)."""
    if isinstance(module, _Synchronized):
        module.__class__ = module.__dict__.pop("_sk_unsynced_class", UNSYNCHRONIZED[type(module)])
        del module.process_group
        if module.__dict__.get("_sk_unfused_class") is nn.SyncBatchNorm:
            module._sk_unfused_class = nn.BatchNorm2d
        return module
    original = module.__dict__.pop("_sk_unsynced", None)
    if original is not None:  # the synchronized copy may have moved (.to(), load_state_dict): take its tensors
        original._parameters.update({k: module._parameters.get(k) for k in original._parameters})
        original._buffers.update({k: module._buffers.get(k) for k in original._buffers})
        original._modules.update({k: module._modules[k] for k in original._modules if k in module._modules})
        original.train(module.training)
        module = original
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = revert_sync_bn_swish(child)
    return module


# ---- what fuse_bn_swish needs to find nn.SyncBatchNorm -> SiLU pairs -----------------------------------------

@contextlib.contextmanager
def local_statistics(model: nn.Module):
    """While active, every nn.SyncBatchNorm of `model` computes local statistics (nn.BatchNorm's forward): the
    probing forward of fuse_bn_swish then issues no collective and runs on CPU, where nn.SyncBatchNorm
    refuses to train once a process group is up. The modules keep their class."""
    switched = [m for m in model.modules() if type(m) is nn.SyncBatchNorm and "forward" not in m.__dict__]
    for m in switched:
        m.forward = types.MethodType(nn.modules.batchnorm._BatchNorm.forward, m)
    try:
        yield
    finally:
        for m in switched:
            del m.forward
