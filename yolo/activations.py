"""Activation modules by name, so a cfg or `--activation` can pick any of the compared variants."""
from typing import Optional

import torch.nn as nn

import swishkernels
from swishkernels import reference

ACTIVATIONS = (
    "leaky", "swish", "swish-naive", "swish-seed-inplace", "swish-me", "silu", "mish", "prelu", "prelu1", "linear",
)
PRELU_INIT = 0.1  # "prelu": the seed thread's nn.PReLU(num_parameters=filters, init=0.10), LeakyReLU's slope
PRELU1_INIT = 0.25  # "prelu1": the thread's nn.PReLU(num_parameters=1), i.e. PyTorch's default init


def build_activation(name: str, channels: Optional[int] = None) -> nn.Module:
    """A fresh activation module for `name` (one of ACTIVATIONS).

    `channels` is needed only by "prelu", which learns one slope per channel (as in the seed's experiment);
    "prelu1" learns one slope per layer.
    """
    if name == "leaky":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "swish":
        return swishkernels.Swish()
    if name == "swish-naive":
        return reference.NaiveSwish()
    if name == "swish-seed-inplace":
        return reference.SeedInplaceSwish()
    if name == "swish-me":
        return reference.MemoryEfficientSwish()
    if name == "silu":
        return nn.SiLU()
    if name == "mish":
        return swishkernels.Mish()
    if name == "prelu":
        if channels is None:
            raise ValueError("activation 'prelu' needs the number of channels (one slope per channel)")
        return nn.PReLU(num_parameters=channels, init=PRELU_INIT)
    if name == "prelu1":
        return nn.PReLU(num_parameters=1, init=PRELU1_INIT)
    if name == "linear":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(ACTIVATIONS)}")
