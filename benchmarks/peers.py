"""Every implementation the benchmarks compare, in one place (ARCHITECTURE.md, "Measuring": peers in one run).

Swish: our backends available on the device, the naive `x * sigmoid(x)`, the seed's MemoryEfficientSwish,
F.silu, torch.compile(F.silu), and LeakyReLU(0.1, inplace=True) as the cost floor.
Mish: our backends and F.mish.
"""
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

import swishkernels as sk
from swishkernels import reference


@dataclass(frozen=True)
class Impl:
    name: str                       # the row label
    activation: str                 # what it computes: "swish", "mish" or "leaky"
    forward: Callable               # x -> y, differentiable
    forward_nograd: Optional[Callable] = None   # what the forward-only timing calls (default: forward)

    def run_nograd(self, x):
        return (self.forward_nograd or self.forward)(x)


# Math the implementations are checked against (in float64) before they are timed.
REFERENCE_MATH = {
    "swish": F.silu,
    "mish": F.mish,
    "leaky": lambda x: F.leaky_relu(x, 0.1),
}


def our_backends(device):
    """Our backends that can run on `device`. On a CPU, Triton runs only in its interpreter, which is
    thousands of times slower than anything else here: it is left out of timings."""
    device_type = torch.device(device).type
    names = sk.available_backends(device_type)
    return [b for b in names if not (device_type == "cpu" and b == "triton")]


_COMPILED = {}


def compiled(fn):
    """torch.compile(fn), built on first use (compiling costs seconds; an unused peer should cost nothing).
    Static shapes: one specialised kernel per dtype and size, as a training job would get."""
    if fn not in _COMPILED:
        config = torch._dynamo.config
        # Every (dtype, size, grad mode) of a benchmark run is one more specialisation of the same function.
        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(config, knob):
                setattr(config, knob, max(getattr(config, knob), 256))
        _COMPILED[fn] = torch.compile(fn, dynamic=False)
    return _COMPILED[fn]


def _compiled_silu(x):
    return compiled(F.silu)(x)


def swish_impls(device):
    ours = [Impl(f"sk.swish[{b}]", "swish", lambda x, b=b: sk.swish(x, backend=b)) for b in our_backends(device)]
    return ours + [
        Impl("naive x*sigmoid(x)", "swish", reference.swish_naive),
        Impl("seed MemoryEfficientSwish", "swish", reference.MemoryEfficientSwishFunction.apply),
        Impl("F.silu", "swish", F.silu),
        Impl("torch.compile(F.silu)", "swish", _compiled_silu),
        # In place when only the forward is timed (as in the seed). Under autograd an in-place op needs a
        # non-leaf input, which a microbenchmark cannot make for free; the out-of-place op runs the same
        # kernels with the same traffic (what each saves for backward is measured by memory.py instead).
        Impl("LeakyReLU(0.1, inplace)", "leaky", lambda x: F.leaky_relu(x, 0.1),
             forward_nograd=lambda x: F.leaky_relu_(x, 0.1)),
    ]


def mish_impls(device):
    ours = [Impl(f"sk.mish[{b}]", "mish", lambda x, b=b: sk.mish(x, backend=b)) for b in our_backends(device)]
    return ours + [Impl("F.mish", "mish", F.mish)]


def all_impls(device):
    """Everything, less the names containing a word of $SWISHKERNELS_BENCH_EXCLUDE (comma-separated)."""
    exclude = [w for w in os.environ.get("SWISHKERNELS_BENCH_EXCLUDE", "").split(",") if w]
    return [i for i in swish_impls(device) + mish_impls(device) if not any(w in i.name for w in exclude)]
