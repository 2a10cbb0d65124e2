"""ultralytics YOLO (v5u, v8, 11, ...): fused BatchNorm+Swish in training, and inference folding kept right.

    from swishkernels.integrations.ultralytics import apply_swishkernels
    model = YOLO("yolov8n.yaml")
    apply_swishkernels(model, recompute=True)    # the one line
    model.train(data=..., epochs=...)

ultralytics' trainer rebuilds the model from its yaml and builds the optimizer and EMA before any callback
runs, so the model is fused from the `on_pretrain_routine_end` callback: fusion keeps the Parameter objects,
so the optimizer already holds the right ones, and the EMA copy (unfused, same state_dict keys) is what
ultralytics validates and saves, so checkpoints contain plain BatchNorm2d + SiLU.

`BaseModel.fuse()` (inference, export) folds each Conv's BatchNorm into the convolution and then computes
`act(conv(x))`; with the SiLU folded into the BatchNorm that would drop the activation. So once a model has
been fused, `BaseModel.fuse` is wrapped to restore plain BatchNorm + SiLU first (`unfuse_bn_swish`).
"""
import functools

import torch
from ultralytics.nn.tasks import BaseModel
from ultralytics.utils import LOGGER

from ..fusion import fuse_bn_swish, recompute_in_forward, unfuse_bn_swish


def norm_act_verdict(module):
    return None  # ultralytics has no norm layers that apply activations themselves


def after_fuse(model):
    install_fuse_guard()


def install_fuse_guard() -> None:
    """Make BaseModel.fuse() unfuse our BatchNorm+Swish before it folds Conv+BN (idempotent)."""
    original = BaseModel.fuse
    if getattr(original, "_swishkernels_guard", False):
        return

    @functools.wraps(original)
    def fuse(self, *args, **kwargs):
        unfuse_bn_swish(self)  # ultralytics folds BN into the conv and then applies `act` itself
        return original(self, *args, **kwargs)

    fuse._swishkernels_guard = True
    BaseModel.fuse = fuse


def _unwrap(model):
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):  # DDP, compile wrappers
        model = model.module
    return getattr(model, "_orig_mod", model)


def apply_swishkernels(yolo, recompute: bool = False, backend=None):
    """Make every training run of `yolo` (an ultralytics YOLO/Model object) train with every
    BatchNorm2d -> SiLU pair fused (and, with recompute=True, the next layer's copy of each fused output
    recomputed in backward). Returns `yolo`."""

    def fuse_trainer_model(trainer):
        model = _unwrap(trainer.model)
        report = fuse_bn_swish(model, recompute=recompute, backend=backend)
        LOGGER.info(f"swishkernels: fused {len(report.fused)} BatchNorm2d+SiLU pairs"
                    f"{' (recompute)' if recompute else ''}, left {len(report.skipped)} BatchNorms alone")
        if recompute:
            trainer._swishkernels_recompute = recompute_in_forward(model)
        trainer._swishkernels_report = report

    yolo.add_callback("on_pretrain_routine_end", fuse_trainer_model)
    return yolo
