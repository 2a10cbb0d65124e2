"""Speed of the fused BatchNorm+Swish (or +Mish) CPU module against nn.BatchNorm2d + nn.SiLU (nn.Mish), in one run.

    .venv/bin/python benchmarks/cpu_bn_swish_speed.py      # fp32 + bf16, NCHW + channels_last, 1 and 2 threads
    .venv/bin/python benchmarks/cpu_bn_swish_speed.py --shapes 8x64x80x80 --dtypes float32 --threads 1
    .venv/bin/python benchmarks/cpu_bn_swish_speed.py --modes train     # forward+backward only
    .venv/bin/python benchmarks/cpu_bn_swish_speed.py --activation mish # BatchNormMish2d against BN + nn.Mish

Prints one row per (mode, shape, layout, dtype, threads): the best time of the eager peer
nn.Sequential(nn.BatchNorm2d(C), nn.SiLU()), of swishkernels.BatchNormSwish2d(C, backend="cpu") and
their ratio (fused / peer: below 1 is faster). Both modules hold the same parameters in the input's
dtype, as after `model.to(dtype)`. Modes:
  train  forward + backward in training mode (batch statistics, running-statistics update, gradients
         of x, weight and bias), the upstream gradient fixed
  eval   forward only, eval mode under torch.no_grad() (running statistics, no autograd)
The two are called alternately (the order flips every round) and the best call of each is kept, so a
burst of load from other processes on a shared machine hits both and rarely decides the best.

Every call allocates its outputs. With glibc's default malloc settings, memory freed at the top of the
heap is returned to the OS, so some steps page-fault on fresh output pages and others don't, depending
on the order of allocations (which differs between the two modules). --keep-freed-memory sets glibc's
mmap and trim thresholds so that freed memory is reused: the steady state then has no page faults and
the comparison is of the kernels and the Python around them.
"""
import argparse
import platform

import torch
import torch.nn as nn
from timing import alternating_times, keep_freed_memory_mapped

import swishkernels as sk


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="8x64x80x80,8x256x20x20,3x37x17x23")
    parser.add_argument("--layouts", default="nchw,channels_last")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--modes", default="train,eval")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default="swish")
    parser.add_argument("--repeats", type=int, default=10, help="at least this many rounds")
    parser.add_argument("--seconds", type=float, default=1.0, help="rounds fill this time")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc: reuse freed memory instead of returning it to the OS (no page faults)")
    args = parser.parse_args()
    if args.keep_freed_memory:
        keep_freed_memory_mapped()

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}"
          f"{', freed memory kept (no page faults)' if args.keep_freed_memory else ''}")
    print(f"{'mode':>5} {'shape':>14} {'layout':>13} {'dtype':>9} {'threads':>7} "
          f"{'peer ms':>10} {'fused ms':>9} {'fused/peer':>10}   "
          f"(peer: BatchNorm2d + {ACTIVATIONS[args.activation][0].__name__})")
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
                    for threads in map(int, args.threads.split(",")):
                        torch.set_num_threads(threads)
                        t_peer, t_fused = map(min, alternating_times(fns, args.repeats, args.seconds))
                        print(f"{mode:>5} {'x'.join(map(str, shape)):>14} {layout:>13} {dtype_name:>9} "
                              f"{threads:>7} {t_peer * 1e3:10.3f} {t_fused * 1e3:9.3f} "
                              f"{t_fused / t_peer:10.3f}", flush=True)


if __name__ == "__main__":
    main()
