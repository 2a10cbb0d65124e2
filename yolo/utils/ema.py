"""Exponential moving average of model weights (Ultralytics ModelEMA).

The EMA copy is what gets evaluated and written to best.pt: it is smoother than the raw weights, and its decay
ramps up from 0 so early, fast-changing weights are not frozen in: decay(n) = d * (1 - exp(-n / tau))."""
import math
from copy import deepcopy

import torch

from .torch_utils import de_parallel


class ModelEMA:
    def __init__(self, model, decay=0.9999, tau=2000, updates=0):
        self.ema = deepcopy(de_parallel(model)).eval()
        self.updates = updates  # optimizer steps seen so far
        self.decay_max, self.tau = decay, tau
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def decay(self, updates):
        return self.decay_max * (1 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay(self.updates)
        msd = de_parallel(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:  # BN counters (int) are copied below
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])

    def state_dict(self):
        return {"model": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        self.ema.load_state_dict(state["model"])
        self.updates = state["updates"]
