"""The fused BatchNorm+Swish CPU kernels pass by pass (torch.ops.swishkernels.bn_swish_*), against the ATen ops
that nn.BatchNorm2d + nn.SiLU run for the same work, in one process.

    PYTHONPATH=$PWD python benchmarks/cpu_bn_kernels_speed.py --shapes 8x256x20x20 --threads 1
    PYTHONPATH=$PWD python benchmarks/cpu_bn_kernels_speed.py --callgrind   # instructions per pass (see below)

Wall clock: the passes take turns in every round (the order flips each round), best time of each kept; read as
ratios within one row set (a shared machine's load hits all alike, but not exactly). Passes:
  ours: stats (sums of d, d^2), forward (f(x*scale+shift)), backward_reduce (sums of dz, dz*(x-mean)),
        backward_input (dx); "ours total" is their sum, the kernel part of a training step
  peer: update_stats (torch.batch_norm_update_stats: ATen's statistics), bn_train (F.batch_norm in training
        mode: statistics + normalisation), silu, silu_backward, bn_backward (aten.native_batch_norm_backward);
        "peer total" = bn_train + silu + silu_backward + bn_backward, the ATen part of the peer's training step
--callgrind: the same calls counted in instructions under valgrind (one thread). Valgrind has no AVX-512: ATen
and our kernels run their AVX2 copies there, so the counts describe those copies.
"""
import argparse
import os

import callgrind as callgrind_counts
import torch
import torch.nn.functional as F
from timing import alternating_times, keep_freed_memory_mapped

import swishkernels  # noqa: F401  (loads the ops)

OPS = torch.ops.swishkernels


def parse_shape(text):
    return tuple(int(s) for s in text.lower().split("x"))


def passes(shape, layout, dtype, activation="swish"):
    """name -> no-argument function, ours then the peer's."""
    gen = torch.Generator().manual_seed(0)
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = (torch.randn(shape, generator=gen) * 2 + 0.5).to(dtype).contiguous(memory_format=memory_format)
    dy = torch.randn(shape, generator=gen).to(dtype).contiguous(memory_format=memory_format)
    c = shape[1]
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    pc = [(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(acc) for _ in range(6)]
    fwd = getattr(OPS, f"bn_{activation}_forward")
    red = getattr(OPS, f"bn_{activation}_backward_reduce")
    inp = getattr(OPS, f"bn_{activation}_backward_input")
    weight, bias = torch.ones(c, dtype=dtype), torch.zeros(c, dtype=dtype)
    rm, rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
    z = F.batch_norm(x, rm.clone(), rv.clone(), weight, bias, True)
    _, save_mean, save_invstd = torch.native_batch_norm(x, weight, bias, rm.clone(), rv.clone(), True, 0.1, 1e-5)
    act, act_backward = ((F.silu, torch.ops.aten.silu_backward) if activation == "swish"
                         else (F.mish, torch.ops.aten.mish_backward))
    ours = {
        "stats": lambda: OPS.bn_swish_stats(x, pc[0], pc[5]),
        "forward": lambda: fwd(x, pc[0], pc[1]),
        "backward_reduce": lambda: red(dy, x, pc[0], pc[1], pc[2]),
        "backward_input": lambda: inp(dy, x, *pc[:5]),
    }
    peer = {
        "update_stats": lambda: torch.batch_norm_update_stats(x, rm, rv, 0.1),
        "bn_train": lambda: F.batch_norm(x, rm, rv, weight, bias, True),
        "act": lambda: act(z),
        "act_backward": lambda: act_backward(dy, z),
        "bn_backward": lambda: torch.ops.aten.native_batch_norm_backward(
            dy, x, weight, rm, rv, save_mean, save_invstd, True, 1e-5, [True, True, True]),
    }
    return ours, peer


def _count_inside_callgrind(args):
    helper = callgrind_counts.helper()
    for shape, layout, dtype in _cases(args):
        ours, peer = passes(shape, layout, getattr(torch, dtype), args.activation)
        for name, fn in {**ours, **peer}.items():
            for _ in range(2):
                fn()
            helper.cg_zero()
            for _ in range(args.calls):
                fn()
            helper.cg_dump(f"{'x'.join(map(str, shape))}|{layout}|{dtype}|{name}".encode())


def callgrind(args):
    rows = {}
    counts = callgrind_counts.run([os.path.abspath(__file__), "--inside-callgrind", "--shapes", args.shapes,
                                   "--layouts", args.layouts, "--dtypes", args.dtypes, "--calls", args.calls,
                                   "--activation", args.activation], timeout=7200)
    for label, total in counts:
        if "|" in label:
            shape, layout, dtype, pass_ = label.split("|")
            rows.setdefault((shape, layout, dtype), {})[pass_] = total / args.calls
    print("instructions per call (callgrind, AVX2 copies, 1 thread), millions")
    for (shape, layout, dtype), counts in rows.items():
        ours = sum(counts[k] for k in ("stats", "forward", "backward_reduce", "backward_input"))
        peer = sum(counts[k] for k in ("bn_train", "act", "act_backward", "bn_backward"))
        cells = " ".join(f"{k}={v / 1e6:.2f}" for k, v in counts.items())
        print(f"{shape:>14} {layout:>13} {dtype:>9}  {cells}  ours_total={ours / 1e6:.2f} peer_total={peer / 1e6:.2f}"
              f" ratio={ours / peer:.3f}")


def _cases(args):
    for shape in map(parse_shape, args.shapes.split(",")):
        for layout in args.layouts.split(","):
            for dtype in args.dtypes.split(","):
                yield shape, layout, dtype


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="8x256x20x20,16x32x160x160")
    parser.add_argument("--layouts", default="nchw,channels_last")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--activation", choices=("swish", "mish"), default="swish")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--inside-callgrind", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside_callgrind:
        torch.set_num_threads(1)
        _count_inside_callgrind(args)
        return
    if args.callgrind:
        callgrind(args)
        return
    keep_freed_memory_mapped()
    print(f"# torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}; best ms")
    for shape, layout, dtype in _cases(args):
        ours, peer = passes(shape, layout, getattr(torch, dtype), args.activation)
        names = list(ours) + list(peer)
        for threads in map(int, args.threads.split(",")):
            torch.set_num_threads(threads)
            times = alternating_times([*ours.values(), *peer.values()], args.repeats, args.seconds)
            best = {n: min(t) * 1e3 for n, t in zip(names, times)}
            ours_total = sum(best[n] for n in ours)
            peer_total = sum(best[n] for n in ("bn_train", "act", "act_backward", "bn_backward"))
            cells = " ".join(f"{n}={v:.3f}" for n, v in best.items())
            print(f"{'x'.join(map(str, shape)):>14} {layout:>13} {dtype:>9} t={threads}  {cells}  "
                  f"ours_total={ours_total:.3f} peer_total={peer_total:.3f} ratio={ours_total / peer_total:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
