"""Speed of the fused BatchNorm+Swish (or +Mish) CPU module against nn.BatchNorm2d + nn.SiLU (nn.Mish), in one run.

    .venv/bin/python benchmarks/cpu_bn_swish_speed.py      # the issue's table: 4 shapes, fp32 + bf16, NCHW +
                                                           # channels_last, train + eval, 1 and 2 threads
    .venv/bin/python benchmarks/cpu_bn_swish_speed.py --shapes 8x64x80x80 --dtypes float32 --threads 1
    .venv/bin/python benchmarks/cpu_bn_swish_speed.py --modes train     # forward+backward only
    .venv/bin/python benchmarks/cpu_bn_swish_speed.py --activation mish # BatchNormMish2d against BN + nn.Mish
    .venv/bin/python benchmarks/cpu_bn_swish_speed.py --callgrind       # instructions per step (small shapes)

Prints one row per (mode, shape, layout, dtype, threads): the best time of the eager peer
nn.Sequential(nn.BatchNorm2d(C), nn.SiLU()) and of swishkernels.BatchNormSwish2d(C, backend="cpu"), the median
over rounds of the per-round ratio fused / peer (below 1 is faster) and the ratio of the best times. Both modules
hold the same parameters in the input's dtype, as after `model.to(dtype)`. Modes:
  train  forward + backward in training mode (batch statistics, running-statistics update, gradients
         of x, weight and bias), the upstream gradient fixed
  eval   forward only, eval mode under torch.no_grad() (running statistics, no autograd)
The two are called alternately (the order flips every round), so a burst of load from other processes on a
shared machine hits both: the per-round ratio is what to read on a noisy machine.

--callgrind counts the instructions of each step under valgrind's callgrind instead (one process, 1 thread;
repeatable where wall-clock is not): a small C helper (cc, valgrind/callgrind.h) zeroes the counters before each
module's loop and dumps them after; instructions per step = the dump's total / steps.

Every call allocates its outputs. With glibc's default malloc settings, memory freed at the top of the
heap is returned to the OS, so some steps page-fault on fresh output pages and others don't, depending
on the order of allocations (which differs between the two modules). --keep-freed-memory sets glibc's
mmap and trim thresholds so that freed memory is reused: the steady state then has no page faults and
the comparison is of the kernels and the Python around them.
"""
import argparse
import os
import platform
import statistics

import callgrind as callgrind_counts
import torch
import torch.nn as nn
from timing import alternating_times, keep_freed_memory_mapped

import swishkernels as sk

SHAPES = "1x16x8x8,2x32x20x20,8x256x20x20,16x32x160x160"
SMALL_SHAPES = "1x16x8x8,2x32x20x20"


def parse_shape(text):
    return tuple(int(s) for s in text.lower().split("x"))


# --activation -> (PyTorch's activation module, the fused module)
ACTIVATIONS = {"swish": (nn.SiLU, sk.BatchNormSwish2d), "mish": (nn.Mish, sk.BatchNormMish2d)}


def make_modules(channels, dtype, activation="swish"):
    torch.manual_seed(0)
    peer_act, fused_class = ACTIVATIONS[activation]
    peer = nn.Sequential(nn.BatchNorm2d(channels), peer_act())
    with torch.no_grad():
        peer[0].weight.uniform_(0.5, 1.5)
        peer[0].bias.uniform_(-1, 1)
    fused = fused_class(channels, backend="cpu")
    fused.load_state_dict(peer[0].state_dict())
    return peer.to(dtype), fused.to(dtype)


def train_step(module, x, dy):
    def step():
        x.grad = None
        for p in module.parameters():
            p.grad = None
        module(x).backward(dy)
    return step


def eval_step(module, x):
    def step():
        with torch.no_grad():
            module(x)
    return step


def cases(args):
    """(mode, shape, layout, dtype name, [peer step, fused step]) for every combination asked for."""
    gen = torch.Generator().manual_seed(0)
    for mode in args.modes.split(","):
        for shape in map(parse_shape, args.shapes.split(",")):
            for layout in args.layouts.split(","):
                memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                for dtype_name in args.dtypes.split(","):
                    dtype = getattr(torch, dtype_name)
                    x = (torch.randn(shape, generator=gen) * 2 + 0.5).to(dtype).contiguous(
                        memory_format=memory_format)
                    dy = torch.randn(shape, generator=gen).to(dtype).contiguous(memory_format=memory_format)
                    peer, fused = make_modules(shape[1], dtype, args.activation)
                    if mode == "train":
                        x.requires_grad_(True)
                        fns = [train_step(peer.train(), x, dy), train_step(fused.train(), x, dy)]
                    else:
                        fns = [eval_step(peer.eval(), x), eval_step(fused.eval(), x)]
                    yield mode, shape, layout, dtype_name, fns


def wall_clock(args):
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, load average "
          f"{os.getloadavg()[0]:.1f}{', freed memory kept (no page faults)' if args.keep_freed_memory else ''}")
    print(f"{'mode':>5} {'shape':>14} {'layout':>13} {'dtype':>9} {'threads':>7} "
          f"{'peer ms':>9} {'fused ms':>9} {'ratio (median of rounds)':>24} {'ratio (best)':>12}   "
          f"(peer: BatchNorm2d + {ACTIVATIONS[args.activation][0].__name__})")
    for mode, shape, layout, dtype_name, fns in cases(args):
        for threads in map(int, args.threads.split(",")):
            torch.set_num_threads(threads)
            t_peer, t_fused = alternating_times(fns, args.repeats, args.seconds)
            ratio = statistics.median(f / p for f, p in zip(t_fused, t_peer))
            print(f"{mode:>5} {'x'.join(map(str, shape)):>14} {layout:>13} {dtype_name:>9} {threads:>7} "
                  f"{min(t_peer) * 1e3:9.3f} {min(t_fused) * 1e3:9.3f} {ratio:24.3f} "
                  f"{min(t_fused) / min(t_peer):12.3f}", flush=True)


def _count_inside_callgrind(args):
    """Runs under valgrind: one zero/dump pair per (case, module)."""
    helper = callgrind_counts.helper()
    torch.set_num_threads(1)
    for mode, shape, layout, dtype_name, fns in cases(args):
        for name, step in zip(("peer", "fused"), fns):
            for _ in range(20):  # warm-up: caches, lazy initialisation
                step()
            helper.cg_zero()
            for _ in range(args.steps):
                step()
            helper.cg_dump(f"{mode}|{'x'.join(map(str, shape))}|{layout}|{dtype_name}|{name}".encode())


def callgrind(args):
    """{(mode, shape, layout, dtype): {module: instructions per step}}, from one process under callgrind."""
    results = {}
    counts = callgrind_counts.run([os.path.abspath(__file__), "--inside-callgrind", "--steps", args.steps,
                                   "--shapes", args.shapes, "--layouts", args.layouts, "--dtypes", args.dtypes,
                                   "--modes", args.modes, "--activation", args.activation])
    for label, total in counts:  # in the order of the cases
        if label.count("|") == 4:
            *case, module = label.split("|")
            results.setdefault(tuple(case), {})[module] = total / args.steps
    return results


def print_callgrind(args):
    print(f"# instructions per step under valgrind --tool=callgrind, 1 thread, {args.steps} steps each, "
          f"torch {torch.__version__}")
    print(f"{'mode':>5} {'shape':>14} {'layout':>13} {'dtype':>9} {'peer instr':>12} {'fused instr':>12} "
          f"{'fused/peer':>10}")
    for (mode, shape, layout, dtype_name), counts in callgrind(args).items():
        print(f"{mode:>5} {shape:>14} {layout:>13} {dtype_name:>9} {counts['peer']:12.0f} {counts['fused']:12.0f} "
              f"{counts['fused'] / counts['peer']:10.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=None, help=f"default {SHAPES} ({SMALL_SHAPES} with --callgrind)")
    parser.add_argument("--layouts", default="nchw,channels_last")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--modes", default="train,eval")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default="swish")
    parser.add_argument("--repeats", type=int, default=10, help="at least this many rounds")
    parser.add_argument("--seconds", type=float, default=1.0, help="rounds fill this time")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc: reuse freed memory instead of returning it to the OS (no page faults)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions per step instead of time")
    parser.add_argument("--steps", type=int, default=200, help="steps per module under callgrind")
    parser.add_argument("--inside-callgrind", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shapes is None:
        args.shapes = SMALL_SHAPES if args.callgrind or args.inside_callgrind else SHAPES
    if args.keep_freed_memory or args.callgrind or args.inside_callgrind:
        keep_freed_memory_mapped()
    if args.inside_callgrind:
        _count_inside_callgrind(args)
    elif args.callgrind:
        print_callgrind(args)
    else:
        wall_clock(args)


if __name__ == "__main__":
    main()
