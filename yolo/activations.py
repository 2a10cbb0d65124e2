"""Activation modules by name, so a cfg or `--activation` can pick any of the compared variants."""
import torch.nn as nn

import swishkernels
from swishkernels import reference

ACTIVATIONS = (
    "leaky", "swish", "swish-naive", "swish-seed-inplace", "swish-me", "silu", "mish", "prelu", "linear",
)


def build_activation(name, channels=None):
    """A fresh activation module for `name` (one of ACTIVATIONS).

    `channels` is needed only by "prelu", which learns one slope per channel (as in the seed's experiment).
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
        return nn.PReLU(num_parameters=channels, init=0.1)
    if name == "linear":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(ACTIVATIONS)}")
