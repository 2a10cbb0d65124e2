"""Which path a call takes when PyTorch is doing more than a plain eager step.

The fast path (the op, differentiated in C++ for the cpu/cuda backends) is right for eager training
and inference, torch.compile and torch.export. Two situations need another path, told apart by a
check that costs about 0.15 us per call (`special_path`):

- a torch.func transform (vmap, grad, vjp, jvp, jacrev, jacfwd, hessian) or forward-mode AD
  (`torch.autograd.forward_ad.dual_level`): activations go through `SwishFunction` / `MishFunction`
  (autograd.py: the same kernels, with backward, jvp and vmap rules). Without this, functorch rejects
  the C++ autograd and forward-mode AD would drop the tangent of a torch.library custom op (zeros).
- ONNX export (both exporters): the call is written with PyTorch's own ops (F.silu, F.mish,
  F.batch_norm), which the exporters map to standard ONNX ops; our kernels are not ONNX ops.

BatchNormSwish2d takes PyTorch's ops (nn.BatchNorm2d.forward + F.silu) in all these situations, and
under torch.jit.trace and torch.compile too (`batch_norm_special_path`). Those composite paths give PyTorch's
numbers. Under torch.compile that is the point: Inductor sees batch_norm and silu, fuses them with their
neighbours and decides itself what to recompute in backward (the memory policy, memory_policy.py, tells it
to keep only convolution outputs); our fused op would be opaque to it.
"""
import sys

import torch
import torch.nn.functional as F
from torch.autograd import forward_ad as _forward_ad

_COMPOSITE = {"swish": F.silu, "mish": F.mish}


_MODULES = sys.modules


def exporting_to_onnx() -> bool:
    # torch.onnx is imported only by code that exports; until then nothing can be exporting.
    onnx = _MODULES.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def special_path() -> bool:
    """True when a call must leave the fast path (see the module docstring). About 0.2 us."""
    if torch._C._are_functorch_transforms_active() or _forward_ad._current_level >= 0:
        # torch.compile traces transforms itself, through the ops' fake kernels and autograd rules
        return not torch.compiler.is_compiling()
    # the dynamo exporter runs torch.export, which counts as compiling; no call at all before torch.onnx loads
    return "torch.onnx" in _MODULES and exporting_to_onnx()


def batch_norm_special_path() -> bool:
    """special_path(), and also torch.jit.trace (the fused BatchNorm is a Python autograd.Function, which a
    traced graph records as a Python call that torch.jit.save cannot write out) and torch.compile (Inductor
    fuses and partitions PyTorch's batch_norm + silu; an opaque op would keep more and run slower)."""
    return torch.compiler.is_compiling() or special_path() or torch.jit.is_tracing()


def activate(x: torch.Tensor, activation: str, backend) -> torch.Tensor:
    """f(x) on the special path, out of place (an in-place form would lose the tangent/batch rule)."""
    if exporting_to_onnx():
        return _COMPOSITE[activation](x)
    from .autograd import FUNCTIONS  # autograd.py imports ops, which imports this module's users
    return FUNCTIONS[activation].apply(x, backend)


def batch_norm_swish(module, x: torch.Tensor) -> torch.Tensor:
    """BatchNormSwish2d as nn.BatchNorm2d followed by nn.SiLU, written with PyTorch's ops: the path
    under torch.func transforms, forward-mode AD and ONNX export. It runs nn.BatchNorm2d's own forward
    (running-statistics updates and momentum handling included), so where PyTorch's pair works this
    gives its numbers and where PyTorch refuses (vmap over in-place running-statistic updates) this
    raises PyTorch's error."""
    return F.silu(torch.nn.BatchNorm2d.forward(module, x))
