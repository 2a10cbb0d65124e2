"""Fused BatchNorm2d + Swish (or Mish) that saves only its input (plus per-channel mean and 1/std).

A Conv-BN-Swish block in eager PyTorch keeps three full-size tensors for backward (conv output for BN,
BN output for Swish, Swish output for the next conv); Conv-BN-LeakyReLU(inplace) keeps two. Here BN and
Swish are one autograd node that keeps only its input, so the block keeps two, and with
`recompute_bn_swish` the next layer's copy of the output is recomputed in backward instead of kept: one.
BatchNormMish2d is the same with Mish (YOLOv4-style CSPDarknet blocks).
"""
import contextlib
from typing import Iterator, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.weak import WeakTensorKeyDictionary

from . import _layout, backends, bn_swish_ops, fused_pair, special_paths


class BatchNormActFunction(torch.autograd.Function):
    """The fused layer on the triton and reference backends (the cpu backend runs one C++ op per direction,
    bn_swish_ops.LAYER_OPS, with the same numbers and saved tensors).
    average_factor: the running statistics' update factor, None for a cumulative average (1 / counter after
    its increment); counter (num_batches_tracked, optional) is incremented with the running statistics.
    The per-channel work is the op set's finish_stats/finish_backward: in kernels on the Triton backend."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, use_batch_stats, average_factor, eps, ops,
                counter=None):
        x = _layout.dense(x)
        mean, invstd, scale, shift = ops.finish_stats(x, weight, bias, running_mean, running_var, counter,
                                                      average_factor, eps, use_batch_stats)
        y = ops.forward(x, scale, shift)
        # Per-channel statistics only, besides x; parameters by reference (no copy). z = x * scale + shift is
        # recomputed in backward (scale and shift in its kernels on the Triton backend).
        ctx.save_for_backward(x, mean, invstd, weight, bias)
        ctx.ops, ctx.use_batch_stats = ops, use_batch_stats
        ctx.param_dtype = None if weight is None else weight.dtype
        ctx.mark_non_differentiable(scale, shift)
        ctx.set_materialize_grads(False)  # no zeros made for scale's and shift's (absent) gradients
        return y, scale, shift

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, _grad_scale, _grad_shift):
        if grad_output is None:  # y's gradient undefined (zero): so are the inputs'
            return (None,) * 10
        x, mean, invstd, weight, bias = ctx.saved_tensors
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_output = _layout.like(grad_output, x)
        scale, shift, coef_z, coef_0, grad_weight, grad_bias = ctx.ops.finish_backward(
            grad_output, x, weight, bias, mean, invstd, ctx.use_batch_stats, ctx.param_dtype)
        grad_x = ctx.ops.backward_input(grad_output, x, scale, shift, scale, coef_z, coef_0) if needs_x else None
        return (grad_x, grad_weight if needs_weight else None, grad_bias if needs_bias else None,
                None, None, None, None, None, None, None)


# Outputs of BatchNormSwish2d / BatchNormMish2d modules in recompute mode -> how to recompute them from their input.
_RECOMPUTABLE = WeakTensorKeyDictionary()


class _Recompute:
    """A recorded output's recipe: the block's input x (and its version, to catch a later in-place change
    of x), per-channel scale and shift, and the output's version when it was recorded."""
    __slots__ = ("forward", "x", "x_version", "scale", "shift", "version")

    def __init__(self, forward, x, scale, shift, version):
        self.forward, self.x, self.scale, self.shift = forward, x, scale, shift
        self.x_version, self.version = x._version, version


def record_recomputable(y: torch.Tensor, forward, x: torch.Tensor, scale, shift) -> None:
    _RECOMPUTABLE[y] = _Recompute(forward, x, scale.detach(), shift.detach(), y._version)


def pack_saved_tensor(tensor):
    """The recompute mode's pack hook: a recipe for BatchNormSwish2d(recompute=True) outputs, else the tensor.
    Recomputing must give exactly the tensor being saved: an output modified in place since it was recorded
    (its version moved: `y += x` in a residual block) is saved as it is. So is a view of one (a different
    tensor object: never in the table)."""
    recipe = _RECOMPUTABLE.get(tensor)
    if recipe is None or recipe.version != tensor._version:
        return tensor
    return recipe


def unpack_saved_tensor(packed):
    if isinstance(packed, _Recompute):
        if packed.x._version != packed.x_version:  # autograd's own in-place check, which the hooks switch off
            raise RuntimeError(
                "swishkernels: the input of a BatchNormSwish2d(recompute=True) layer was modified by an "
                "in-place operation after its forward, so its output cannot be recomputed for backward")
        return packed.forward(packed.x, packed.scale, packed.shift)  # bit-identical: same kernel, same inputs
    return packed


@contextlib.contextmanager
def recompute_bn_swish() -> Iterator[None]:
    """While active, a layer that saves the output of a BatchNormSwish2d(recompute=True) for backward
    (the next convolution, for its weight gradient) keeps a recipe instead: the block's input, already
    saved by the block itself, plus per-channel scale and shift. Backward recomputes the output.
    Under torch.compile it does nothing: the fused layers run PyTorch's ops there and the partitioner
    decides what to recompute (state it with sk.memory_policy); dynamo refuses saved_tensors_hooks."""
    if torch.compiler.is_compiling():
        yield
        return
    with torch.autograd.graph.saved_tensors_hooks(pack_saved_tensor, unpack_saved_tensor):
        yield


class _FusedBatchNormAct2d(nn.BatchNorm2d):
    """nn.BatchNorm2d followed by an activation, fused. Subclasses name the activation (bn_swish_ops.ACTIVATIONS)
    and give its PyTorch form for the special paths."""

    activation: str
    fused_pair = None  # fuse_bn_swish sets a FusedPair on the layers it made (fused_pair.py)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Optional[Union[torch.device, str]] = None,
                 dtype: Optional[torch.dtype] = None, *, backend: Optional[str] = None, recompute: bool = False):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.backend = backend
        self.recompute = recompute

    def _pytorch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """nn.BatchNorm2d.forward then the activation, with PyTorch's ops (torch.func, forward AD, ONNX, tracing)."""
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor, use_batch_stats: bool) -> None:
        """The errors PyTorch's batch_norm gives, in one line, before any kernel sees x."""
        name = type(self).__name__
        per_channel = "running_mean" if self.running_mean is not None else "weight" if self.weight is not None else None
        if per_channel is not None and x.size(1) != self.num_features:
            raise RuntimeError(f"{name}: {per_channel} should contain {x.size(1)} elements not {self.num_features} "
                               f"(the input has {x.size(1)} channels, the layer {self.num_features})")
        if use_batch_stats and not self.eps > 0:
            raise ValueError(f"{name}: eps must be positive during training, but got {self.eps}")
        if use_batch_stats and x.numel() // x.size(1) <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pair = self.fused_pair
        if pair is None:
            return self._forward_fused(x)
        if not pair.intact():  # its activation's slot holds something else now (or compiling): plain BatchNorm
            return self._forward_plain(x)
        y = self._forward_fused(x)
        pair.mark(y)
        return y

    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        return nn.BatchNorm2d.forward(self, x)

    def _backend_name(self, device: torch.device) -> str:
        """The backend running this layer on `device`, resolved once per (requested backend, device): a new
        `layer.backend`, $SWISHKERNELS_BACKEND or device resolves again (and raises if it cannot run)."""
        requested = backends.requested(self.backend)
        cached = self.__dict__.get("_sk_resolved")
        if cached is not None and cached[0] == requested and cached[1] == device:
            return cached[2]
        name = bn_swish_ops.resolve_name(self.backend, device)
        self.__dict__["_sk_resolved"] = (requested, device, name)  # plain values: deepcopy and pickle keep working
        return name

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        if special_paths.batch_norm_special_path():  # torch.compile, torch.func, forward AD, ONNX, jit.trace
            return self._pytorch_forward(x)  # PyTorch's ops
        # The checks, each paid in full only when it fails (one comparison otherwise).
        if x.dim() != 4:
            self._check_input_dim(x)  # raises for nn.BatchNorm2d's rule; SyncBatchNorm subclasses take >= 2-D
        if x.dtype not in _layout.SUPPORTED_DTYPES:
            _layout.check_dtype(x, type(self).__name__)
        params, buffers = self._parameters, self._buffers  # not through nn.Module.__getattr__ (5 lookups a call)
        weight, bias = params["weight"], params["bias"]
        running_mean, running_var = buffers["running_mean"], buffers["running_var"]
        training = self.training
        use_batch_stats = training or (running_mean is None and running_var is None)
        channels = x.size(1)
        if channels != self.num_features or (use_batch_stats and not (self.eps > 0 and x.numel() >= 2 * channels)):
            self._check_input(x, use_batch_stats)
        # Running-statistics bookkeeping as nn.BatchNorm2d.forward does it, but the counter's increment (and,
        # with momentum=None, the cumulative factor 1 / count) happens in the op: no extra launch.
        counter = buffers.get("num_batches_tracked") if training and self.track_running_stats else None
        average_factor = self.momentum if counter is not None or self.momentum is not None else 0.0
        if training and not self.track_running_stats:
            running_mean = running_var = None
        name = self._backend_name(x.device)
        layer_ops = bn_swish_ops.LAYER_OPS.get(self.activation) if name == "cpu" else None
        if layer_ops is not None:  # one C++ op, differentiated in C++
            y, _, _, scale, shift = layer_ops[0](x, weight, bias, running_mean, running_var, counter,
                                                 average_factor, self.eps, use_batch_stats)
            ops = None
        else:
            ops = bn_swish_ops._OPS[name][self.activation]
            y, scale, shift = BatchNormActFunction.apply(x, weight, bias, running_mean, running_var,
                                                         use_batch_stats, average_factor, self.eps, ops, counter)
        if self.recompute and y.requires_grad and not torch.compiler.is_compiling():
            ops = ops or bn_swish_ops._OPS[name][self.activation]
            record_recomputable(y, ops.forward, _layout.dense(x), scale, shift)
        return y

    def __prepare_scriptable__(self):
        """torch.jit.script calls this first: one line naming the alternatives, not an error deep inside."""
        raise RuntimeError(fused_pair.SCRIPT_ERROR.format(what=f"a {type(self).__name__} layer"))

    def extra_repr(self):
        extra = super().extra_repr()
        if self.backend is not None:
            extra += f", backend={self.backend!r}"
        return extra + (", recompute=True" if self.recompute else "")


class BatchNormSwish2d(_FusedBatchNormAct2d):
    """Drop-in for nn.BatchNorm2d followed by Swish/SiLU: same constructor, same state_dict keys, same
    running-statistics updates. `recompute=True` marks outputs for `recompute_bn_swish`."""

    activation = "swish"

    def _pytorch_forward(self, x: torch.Tensor) -> torch.Tensor:
        return special_paths.batch_norm_swish(self, x)


class BatchNormMish2d(_FusedBatchNormAct2d):
    """Drop-in for nn.BatchNorm2d followed by nn.Mish: same constructor, same state_dict keys, same
    running-statistics updates. `recompute=True` marks outputs for `recompute_bn_swish`."""

    activation = "mish"

    def _pytorch_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(nn.BatchNorm2d.forward(self, x))
