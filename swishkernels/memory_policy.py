"""One-line memory policy for any CNN: keep convolution (and matmul) outputs for backward, recompute the rest.

    model = sk.memory_policy(model)          # in place; works in eager and under torch.compile(fullgraph=True)

It is selective activation checkpointing (torch.utils.checkpoint with `create_selective_checkpoint_contexts`)
around the model's forward. Outputs of convolutions and matrix products are kept; activations, additions,
concatenations, upsampling and the normalized BatchNorm output are recomputed from them in backward. A
Conv-BN-activation block then keeps one tensor (its conv output) whatever the activation: SiLU, ReLU,
LeakyReLU(inplace=True), our fused BatchNormSwish2d.

Where it pays:
- Under torch.compile (policy `keep_conv_outputs_compiled`) the policy is a statement the partitioner
  honours: Inductor fuses BatchNorm and the activation into the backward kernels that need them. Ops whose
  recompute is another pass over their input but whose results backward needs are small are left to the
  partitioner, which keeps those results: BatchNorm's per-channel mean and rstd (not a second var_mean
  over every conv output), reductions, and the 1-byte offsets of overlapping max pools (YOLO's SPPF: a
  recomputed 5x5 argmax chain made yolov8n's step 1.1x compile alone's). Cost: a BatchNorm whose output
  goes straight into a convolution (no activation or addition between) keeps that output as well.
  This is the route for compiled models (our fused layers run PyTorch's ops while compiling, so
  Inductor sees the math; see special_paths.batch_norm_special_path).
- In eager (policy `keep_conv_outputs`: everything but conv/matmul outputs recomputed), PyTorch's
  checkpoint recomputes the whole region at the first backward use, so what is kept between forward and
  backward drops (one tensor per block) but the peak inside backward does not; for eager training
  `sk.fuse_bn_swish(model, recompute=True)` keeps about as little with a lower peak.

Running statistics: eager checkpointing runs the forward twice, which would update BatchNorm's running
statistics (and num_batches_tracked) twice; the recompute here restores every buffer of the model to its
value before the recompute, so they match a plain forward exactly. Compiled graphs recompute only pure
ops (the updates are functionalized into the forward graph), so nothing needs restoring there.
"""
import functools
from typing import Any, List, Tuple

import torch
import torch.nn as nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

aten = torch.ops.aten


def _ops(*names: str) -> frozenset:
    """The aten overloads among `names` ("packet.overload") that this PyTorch has."""
    found = set()
    for name in names:
        packet, overload = name.split(".")
        op = getattr(getattr(aten, packet, None), overload, None)
        if op is not None:
            found.add(op)
    return frozenset(found)


# Ops whose outputs are kept: the expensive ones. Everything else in the region is recomputed.
SAVED_OPS = frozenset({
    aten.convolution.default, aten._convolution.default, aten.mkldnn_convolution.default,
    aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
})
# Under torch.compile, ops left to Inductor's partitioner (PREFER_SAVE: the min-cut decides, as without a
# policy): recomputing them in backward is another pass over their input, while what backward needs of them
# is small. Normalizations in training (backward needs per-channel mean and rstd; recomputing them is a
# second reduction over the conv output) and reductions: the partitioner keeps outputs 4x smaller than
# their input and recomputes the pointwise rest (the normalized tensor is recomputed from the kept conv
# output when it feeds an activation, as before). A tag covers every node an op decomposes into, so a
# batch_norm cannot be split into "keep the statistics, recompute the rest" by the policy itself.
PARTITIONER_OPS = _ops(
    "_native_batch_norm_legit.default", "_native_batch_norm_legit.no_stats", "native_batch_norm.default",
    "_batch_norm_with_update.default", "cudnn_batch_norm.default", "miopen_batch_norm.default",
    "native_layer_norm.default", "native_group_norm.default",
    "sum.dim_IntList", "mean.dim", "var_mean.correction", "var.correction", "std_mean.correction",
    "std.correction", "amax.default", "amin.default", "_adaptive_avg_pool2d.default",
    "_adaptive_avg_pool3d.default", "adaptive_max_pool2d.default", "adaptive_max_pool3d.default")
# Max pooling with overlapping windows (kernel > stride: YOLO's SPPF, 5x5 stride 1, three in a chain) is left
# to the partitioner too: recomputing it reads every input kernel^2 / stride^2 times and recomputes the
# argmax (Inductor's CPU code for a 5-wide window is masked and slow: on yolov8n it made the policy's step
# 1.1x compile's), while the partitioner keeps 1-byte offsets. Non-overlapping pools (2x2 stride 2) are
# recomputed: one pass over their input, like a pointwise op, and nothing more is kept.
MAX_POOL_OPS = _ops("max_pool2d_with_indices.default", "max_pool3d_with_indices.default")


def _overlapping_windows(args: Tuple[Any, ...]) -> bool:
    kernel = list(args[1])
    stride = list(args[2]) if len(args) > 2 and args[2] else kernel  # stride=[]: the kernel size
    dims = max(len(kernel), len(stride))
    kernel, stride = (kernel * dims)[:dims], (stride * dims)[:dims]  # a single value covers every dim
    return any(k > s for k, s in zip(kernel, stride))


def keep_conv_outputs(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """The selective-checkpoint policy in eager: keep convolution and matmul outputs, recompute everything
    else (eager checkpointing recomputes the whole region anyway; anything saved would be kept whole)."""
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def keep_conv_outputs_compiled(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """The policy under torch.compile: keep convolution and matmul outputs; leave normalizations, reductions
    and overlapping max pooling to the partitioner (it keeps their small results: per-channel statistics,
    pooling offsets); recompute everything else (pointwise ops, concatenations, views, upsampling)."""
    if op in SAVED_OPS:
        return CheckpointPolicy.MUST_SAVE
    if op in PARTITIONER_OPS or (op in MAX_POOL_OPS and _overlapping_windows(args)):
        return CheckpointPolicy.PREFER_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


# The context_fn for torch.utils.checkpoint(..., use_reentrant=False, context_fn=...) under torch.compile:
# a functools.partial of PyTorch's own function, the form dynamo turns into a tagged region.
checkpoint_contexts = functools.partial(create_selective_checkpoint_contexts, keep_conv_outputs_compiled)
eager_checkpoint_contexts = functools.partial(create_selective_checkpoint_contexts, keep_conv_outputs)


class _RestoringBuffers:
    """The eager recompute context: the policy's own, plus every buffer of the model put back afterwards
    (the recomputed forward must not update running statistics a second time)."""

    def __init__(self, recompute_context, module: nn.Module):
        self.recompute_context, self.module = recompute_context, module
        self.saved: List[Tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self):
        with torch.no_grad():
            self.saved = [(buffer, buffer.clone()) for buffer in self.module.buffers()]
        return self.recompute_context.__enter__()

    def __exit__(self, *exc_info):
        try:
            return self.recompute_context.__exit__(*exc_info)
        finally:
            with torch.no_grad():
                for buffer, value in self.saved:
                    buffer.copy_(value)
            self.saved = []


def _eager_contexts(module: nn.Module):
    forward_context, recompute_context = eager_checkpoint_contexts()
    return forward_context, _RestoringBuffers(recompute_context, module)


def _forward_with_policy(forward, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    if not torch.is_grad_enabled():  # inference: nothing is kept for backward anyway
        return forward(*args, **kwargs)
    if torch.compiler.is_compiling():
        return checkpoint(forward, *args, use_reentrant=False, context_fn=checkpoint_contexts, **kwargs)
    # respect_saved_tensors_hooks: the kept conv outputs go through the caller's saved_tensors_hooks like any
    # saved tensor (sk.saved_for_backward counts them, torch.autograd.graph.save_on_cpu moves them).
    return checkpoint(forward, *args, use_reentrant=False, context_fn=functools.partial(_eager_contexts, module),
                      respect_saved_tensors_hooks=True, **kwargs)


def has_memory_policy(model: nn.Module) -> bool:
    forward = model.__dict__.get("forward")
    return isinstance(forward, functools.partial) and forward.func is _forward_with_policy


def memory_policy(model: nn.Module) -> nn.Module:
    """Run `model`'s forward under the policy (keep conv/matmul outputs, recompute the rest); returns the
    model, changed in place (its parameters, buffers, state_dict and hooks are untouched). Calling it
    again does nothing; `remove_memory_policy(model)` undoes it. Compile after applying it:
    `torch.compile(sk.memory_policy(model))`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"memory_policy: expected an nn.Module, got {type(model).__name__}")
    if not has_memory_policy(model):
        model.forward = functools.partial(_forward_with_policy, model.forward, model)
    return model


def remove_memory_policy(model: nn.Module) -> nn.Module:
    """Undo memory_policy(model); returns the model."""
    if has_memory_policy(model):
        original = model.__dict__.pop("forward").args[0]
        if getattr(original, "__func__", None) is not getattr(type(model), "forward", None):
            model.forward = original  # the model had a forward of its own before: put it back
    return model
