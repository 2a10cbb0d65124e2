"""Optimizer, learning-rate schedule and warmup, as in Ultralytics yolov3 (2020).

Three parameter groups so weight decay lands on conv/linear weights only: BatchNorm (and other) weights and
all biases are not decayed. The schedule is computed from (epoch, iteration) alone, never from mutable
scheduler state, so a resumed run sets exactly the learning rates an uninterrupted one would."""
import math

import numpy as np
import torch
import torch.nn as nn

NOMINAL_BATCH_SIZE = 64  # gradients are accumulated up to this many images per optimizer step
WARMUP_MIN_ITERS = 50  # warm up over at least this many iterations, however few batches an epoch has
WARMUP_BIAS_LR = 0.1  # bias lr starts high and falls to lr0 during warmup (Ultralytics)
WARMUP_MOMENTUM = 0.8  # momentum rises from this to hyp['momentum'] during warmup


def default_accumulate(total_batch_size, nbs=NOMINAL_BATCH_SIZE):
    return max(round(nbs / total_batch_size), 1)


def scaled_weight_decay(weight_decay, total_batch_size, accumulate, nbs=NOMINAL_BATCH_SIZE):
    """Weight decay per optimizer step, scaled to the images actually seen per step (Ultralytics)."""
    return weight_decay * total_batch_size * accumulate / nbs


def split_parameters(model):
    """(no_decay_weights, decay_weights, biases): BN/PReLU/... weights, conv/linear weights, all biases."""
    other, decay, biases = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                biases.append(p)
            elif name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)):
                decay.append(p)
            else:
                other.append(p)
    return other, decay, biases


def build_optimizer(model, name, lr0, momentum, weight_decay):
    other, decay, biases = split_parameters(model)
    name = name.lower()
    if name == "adam":
        optimizer = torch.optim.Adam(other, lr=lr0, betas=(momentum, 0.999))
    elif name == "sgd":
        optimizer = torch.optim.SGD(other, lr=lr0, momentum=momentum, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {name!r}: use sgd or adam")
    optimizer.add_param_group({"params": decay, "weight_decay": weight_decay})
    optimizer.add_param_group({"params": biases})  # index 2: the warmup treats biases specially
    for group in optimizer.param_groups:
        group["initial_lr"] = lr0
    return optimizer


def cosine_lr_factor(epoch, epochs, lrf):
    """lr multiplier: 1 at epoch 0 falling along a half cosine to lrf at the last epoch."""
    return ((1 + math.cos(epoch * math.pi / epochs)) / 2) * (1 - lrf) + lrf


def warmup_iterations(warmup_epochs, batches_per_epoch):
    if warmup_epochs <= 0:
        return 0
    return max(round(warmup_epochs * batches_per_epoch), WARMUP_MIN_ITERS)


def set_learning_rates(optimizer, hyp, epoch, epochs, ni, n_warmup, accumulate_target):
    """Set lr (and momentum) of every group for global iteration `ni`; returns the accumulate to use.

    During warmup the lr rises linearly from 0 (SGD biases: falls from WARMUP_BIAS_LR) to the cosine value, the
    SGD momentum rises from WARMUP_MOMENTUM, and gradient accumulation ramps from 1 image
    batch to its target, so the first steps are small and frequent."""
    target = hyp["lr0"] * cosine_lr_factor(epoch, epochs, hyp["lrf"])
    if ni >= n_warmup:
        for group in optimizer.param_groups:
            group["lr"] = target
            _set_momentum(group, hyp["momentum"])
        return accumulate_target
    xi = [0, n_warmup]
    # Adam steps by ~lr whatever the gradient, so a 0.1 bias lr would throw the biases (BN shifts included)
    # around: under Adam the biases warm up from 0 like the weights.
    bias_start = WARMUP_BIAS_LR if isinstance(optimizer, torch.optim.SGD) else 0.0
    for j, group in enumerate(optimizer.param_groups):
        start = bias_start if j == 2 else 0.0
        group["lr"] = float(np.interp(ni, xi, [start, target]))
        _set_momentum(group, float(np.interp(ni, xi, [WARMUP_MOMENTUM, hyp["momentum"]])))
    return max(1, int(np.interp(ni, xi, [1, accumulate_target]).round()))


def _set_momentum(group, value):
    if "momentum" in group:  # SGD only; Adam's betas stay as built (Ultralytics)
        group["momentum"] = value
