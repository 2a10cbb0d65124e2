"""Per-call cost of a tiny training step: 64-element forward + backward, where Python and dispatch
dominate and the kernels do not matter. Peers in the same run: F.silu, and the op called directly.

    PYTHONPATH=$PWD python benchmarks/per_call_cost.py [--seconds 20]

Prints the median microseconds per forward+backward of each path (rounds alternate, so load from other
processes hits all of them alike).
"""
import argparse
import statistics

import torch
import torch.nn.functional as F

import swishkernels as sk
from timing import alternating_times


def step(fn, x):
    def run():
        fn(x).sum().backward()
    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--numel", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(args.numel, requires_grad=True)
    paths = {"F.silu": F.silu, "sk.swish (cpu)": sk.swish, "sk.Swish() module": sk.Swish()}
    if "cpu" in sk.available_backends("cpu"):
        paths["torch.ops.swishkernels.swish_forward"] = torch.ops.swishkernels.swish_forward
    times = alternating_times([step(fn, x) for fn in paths.values()], repeats=1000, seconds=args.seconds)
    print(f"torch {torch.__version__}, {args.numel} elements, forward+backward, median of {len(times[0])} rounds")
    for name, samples in zip(paths, times):
        print(f"  {name:40s} {statistics.median(samples) * 1e6:7.1f} us")


if __name__ == "__main__":
    main()
