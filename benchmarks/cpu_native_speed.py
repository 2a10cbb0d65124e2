"""Speed of the C++ CPU kernels against ATen's own, measured in the same run.

    .venv/bin/python benchmarks/cpu_native_speed.py    # swish, fp32 + bf16, 4M-64M, 1 and 2 threads
    .venv/bin/python benchmarks/cpu_native_speed.py --activations swish,mish --sizes 4M

Prints one row per (activation, threads, dtype, size, pass): the best time of ATen's op
(F.silu / aten.silu_backward, F.mish / aten.mish_backward), of ours (torch.ops.swishkernels.*), the
ratio of the bests and the median of the per-round ratios (ours / ATen: below 1 is faster). The two
are called alternately, so a burst of load from other processes on a shared machine hits both; the
median ratio shows whether a difference of the bests is systematic or luck.

Both allocate their output on every call, as users' calls do; from 16M fp32 elements on, that
allocation's page faults take most of the time. With transparent huge pages in `madvise` mode,
THP_MEM_ALLOC_ENABLE=1 (read by torch's CPU allocator) cuts that for both: measured 3x faster at 64M
on the 2-core EPYC dev machine.
"""
import argparse
import platform
import statistics

import torch
import torch.nn.functional as F
from timing import alternating_times

import swishkernels._C  # noqa: F401  (registers torch.ops.swishkernels)

ops = torch.ops.swishkernels
PEERS = {  # activation -> pass -> (ATen's op, ours)
    "swish": {"forward": (F.silu, ops.swish_forward),
              "backward": (torch.ops.aten.silu_backward, ops.swish_backward)},
    "mish": {"forward": (F.mish, ops.mish_forward),
             "backward": (torch.ops.aten.mish_backward, ops.mish_backward)},
}


def parse_size(text):
    scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1].upper(), 1)
    return int(text[:-1] if scale > 1 else text) * scale


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--activations", default="swish")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--sizes", default="4M,16M,64M")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=6, help="at least this many rounds")
    parser.add_argument("--seconds", type=float, default=0.5, help="rounds fill this time")
    args = parser.parse_args()

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'activation':>10} {'threads':>7} {'dtype':>9} {'numel':>6} {'pass':>8} "
          f"{'ATen ms':>9} {'ours ms':>9} {'ours/ATen':>9} {'median':>7}")
    gen = torch.Generator().manual_seed(0)
    for activation in args.activations.split(","):
        for threads in map(int, args.threads.split(",")):
            torch.set_num_threads(threads)
            for dtype_name in args.dtypes.split(","):
                dtype = getattr(torch, dtype_name)
                for size in args.sizes.split(","):
                    n = parse_size(size)
                    x = (torch.randn(n, generator=gen) * 4).to(dtype)
                    dy = torch.randn(n, generator=gen).to(dtype)
                    for pass_name, (aten, ours) in PEERS[activation].items():
                        inputs = (x,) if pass_name == "forward" else (dy, x)
                        times_aten, times_ours = alternating_times(
                            [lambda fn=fn: fn(*inputs) for fn in (aten, ours)], args.repeats,
                            args.seconds)
                        t_aten, t_ours = min(times_aten), min(times_ours)
                        median = statistics.median(o / a for o, a in zip(times_ours, times_aten))
                        print(f"{activation:>10} {threads:>7} {dtype_name:>9} {size:>6} "
                              f"{pass_name:>8} {t_aten * 1e3:9.3f} {t_ours * 1e3:9.3f} "
                              f"{t_ours / t_aten:9.3f} {median:7.3f}", flush=True)
                    del x, dy


if __name__ == "__main__":
    main()
