"""What a Darknet keeps for backward in one training batch, counted by `sk.saved_for_backward`.

    darknet_saved("yolov3", img_size=320, batch=64, activation="swish").mib

One home for the experiment's memory column (`yolo.experiment`) and the Darknet table of
benchmarks/memory.py. The count is exact, device-independent and fp32; it is affine in the batch (feature
maps per image plus per-layer BatchNorm statistics), so two forwards at batch 1 and 2 give any batch.
"""
from typing import Optional, Union

import torch
import torch.nn as nn

import swishkernels as sk


def build_darknet(cfg: str, num_classes: int = 80, activation: Optional[str] = None, fuse_bn: bool = False,
                  fuse_bn_recompute: bool = False, backend: Optional[str] = None,
                  device: Union[str, torch.device] = "cpu") -> nn.Module:
    """The Darknet the trainer would build with these options (train mode): `activation` replaces the cfg's,
    `fuse_bn` / `fuse_bn_recompute` fuse BatchNorm+Swish as --fuse-bn does, `backend` pins our kernels'
    backend (cpu, triton, ...). ValueError when fusing finds no BatchNorm2d followed by Swish/SiLU."""
    from yolo.models import Darknet

    model = Darknet(cfg, num_classes=num_classes, activation=activation).to(device)
    if (fuse_bn or fuse_bn_recompute) and not sk.fuse_bn_swish(model, recompute=fuse_bn_recompute):
        raise ValueError(f"fuse_bn: {cfg} with activation {model.activation_name!r} has no BatchNorm2d followed by "
                         "Swish/SiLU; use activation swish (or silu)")
    if backend:
        for module in model.modules():
            if hasattr(module, "backend"):
                module.backend = backend
    return model.train()


def saved_by_model(model: nn.Module, x: torch.Tensor) -> sk.SavedForBackward:
    """What one forward of `model` on `x` keeps for backward, its own parameters and buffers left out.
    Counted as the trainer runs: outputs of BatchNormSwish2d(recompute=True) blocks count as the recipes
    that replace them under `sk.recompute_bn_swish()` (other layers are unaffected)."""
    return sk.saved_for_backward(model, x, recompute=True, exclude=model)


def darknet_saved(cfg: str, img_size: int, batch: int, num_classes: int = 80, activation: Optional[str] = None,
                  fuse_bn: bool = False, fuse_bn_recompute: bool = False, backend: Optional[str] = None,
                  device: Union[str, torch.device] = "cpu") -> sk.SavedForBackward:
    """Saved bytes of one training forward of the model build_darknet() makes, at any `batch`, from forwards
    at batch 1 and 2 (the bytes are affine in the batch), so a large batch is never run."""
    torch.manual_seed(0)
    model = build_darknet(cfg, num_classes, activation, fuse_bn, fuse_bn_recompute, backend, device)
    one, two = (saved_by_model(model, torch.rand(b, 3, img_size, img_size, device=device)) for b in (1, 2))
    return sk.SavedForBackward(bytes=one.bytes + (batch - 1) * (two.bytes - one.bytes), tensors=two.tensors)
