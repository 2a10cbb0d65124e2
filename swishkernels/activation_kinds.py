"""Which activation a module computes, told by behaviour rather than by class name.

Swish lives under many class names: nn.SiLU, ours, the seed thread's `Swish` / `MemoryEfficientSwish`
(pip efficientnet-pytorch), timm's `Swish` / `SwishMe`, YOLOX's and older yolov5's `SiLU`, mmcv's `Swish`.
A module is taken for an activation kind when it is a known class (`KNOWN`), or when it is a
parameter-free leaf module (no parameters, buffers or children, not one of torch.nn's own classes) whose
output AND input gradient match that activation on a float64 probe tensor: a look-alike that computes
something else (a scaled Swish, a hard Swish, a gelu) is never taken for one.
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modules import Mish, Swish

# Exact types (a subclass may change forward, so it goes through the numerical check instead).
KNOWN = {nn.SiLU: "swish", Swish: "swish", nn.Mish: "mish", Mish: "mish"}
REFERENCES = {"swish": F.silu, "mish": F.mish}


def has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def _probe_tensor() -> torch.Tensor:
    # Spans the saturated tails and the curved middle, where look-alikes differ; 4-D like a feature map.
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 4
    values.view(-1)[:6] = torch.tensor([-30.0, -9.0, -0.5, 0.25, 9.0, 30.0], dtype=torch.float64)
    return values


def _computes(module: nn.Module, kind: str) -> bool:
    """module(x) and its input gradient equal the activation's on a probe (float64, default tolerances)."""
    reference = REFERENCES[kind]
    x = _probe_tensor()
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            leaf = x.clone().requires_grad_()
            out = module(leaf.clone())  # a clone: an in-place module must not write into the leaf
            if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype:
                return False
            expected = reference(x)
            if not torch.allclose(out.detach(), expected, rtol=1e-7, atol=1e-7):
                return False
            if not out.requires_grad:
                return False
            weight = torch.linspace(-1, 1, x.numel(), dtype=x.dtype).view_as(x)
            (grad,) = torch.autograd.grad(out, leaf, weight)
            ref_leaf = x.clone().requires_grad_()
            (expected_grad,) = torch.autograd.grad(reference(ref_leaf), ref_leaf, weight)
            return torch.allclose(grad, expected_grad, rtol=1e-7, atol=1e-7)
    except Exception:  # a module that cannot run on a float64 feature map is no activation we fuse
        return False


def _candidate(module: nn.Module) -> bool:
    if module._modules or module._parameters or module._buffers:
        return False
    # torch's own classes: only those in KNOWN compute these; ours: KNOWN, or a fused pair's pass-through
    if type(module).__module__.startswith(("torch.", "swishkernels.")):
        return False
    return not has_hooks(module)


class ActivationKinds:
    """activation_kind(module) with the numerical checks cached per instance (one fuse/replace call)."""

    def __init__(self):
        self._seen: Dict[int, Optional[str]] = {}
        self.recognised: Dict[str, str] = {}  # "package.module.Class" -> kind, for those found numerically

    def __call__(self, module) -> Optional[str]:
        kind = KNOWN.get(type(module))
        if kind is not None or not isinstance(module, nn.Module):
            return kind
        if id(module) not in self._seen:
            self._seen[id(module)] = self._check(module)
        return self._seen[id(module)]

    def _check(self, module: nn.Module) -> Optional[str]:
        if not _candidate(module):
            return None
        for kind in REFERENCES:
            if _computes(module, kind):
                cls = type(module)
                self.recognised[f"{cls.__module__}.{cls.__qualname__}"] = kind
                return kind
        return None


def activation_kind(module) -> Optional[str]:
    """"swish", "mish" or None: what `module` computes (see the module docstring)."""
    return ActivationKinds()(module)
