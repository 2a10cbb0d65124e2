"""Per-call cost of tiny activation calls (64 elements), where Python and dispatch dominate and the kernels
do not matter: forward+backward, and a no-grad forward. Peers in the same run: F.silu / F.mish (every path's
ratio is to its activation's), nn.SiLU() / nn.Mish() (the fair peer of the module forms, which pay the same
nn.Module call), and the op called directly through torch.ops.

    PYTHONPATH=$PWD python benchmarks/per_call_cost.py [--seconds 20] [--callgrind] [--out FILE.md]

Wall clock: the paths take turns within each round (load from other processes hits all of them alike), each
sample a loop of SAMPLE_CALLS calls; reported as the median microseconds per call and the median over rounds
of each path's ratio to its peer in the same round. `--callgrind`: the same calls counted in instructions
under valgrind's callgrind (repeatable on a loaded machine where times are not): a small C helper (built
with cc, valgrind's callgrind.h) zeroes the counters before each path's loop and dumps them after;
instructions per call = the dump's total / calls.
"""
import argparse
import os
import platform
import statistics

import callgrind as callgrind_counts
import torch
import torch.nn as nn
import torch.nn.functional as F
from timing import alternating_times

import swishkernels as sk

SAMPLE_CALLS = 10  # calls per wall-clock sample: one call (3 us) is too close to the timer's resolution
# activation -> (functional peer, module peer)
PEERS = {"swish": ("F.silu", "nn.SiLU()"), "mish": ("F.mish", "nn.Mish()")}


def paths():
    """name -> (activation, function of one tensor)."""
    table = {}
    for activation, functional_peer, module_peer, function, module in (
            ("swish", F.silu, nn.SiLU(), sk.swish, sk.Swish()), ("mish", F.mish, nn.Mish(), sk.mish, sk.Mish())):
        names = PEERS[activation]
        table[names[0]] = (activation, functional_peer)
        table[names[1]] = (activation, module_peer)
        table[f"sk.{activation}"] = (activation, function)
        table[f"sk.{activation.capitalize()}()"] = (activation, module)
        if "cpu" in sk.available_backends("cpu"):
            op = getattr(torch.ops.swishkernels, f"{activation}_forward")
            table[f"torch.ops.swishkernels.{activation}_forward"] = (activation, op)
            table[f"torch.ops.swishkernels.{activation}_forward.default"] = (activation, op.default)
    return table


def is_module_form(name):
    return name.endswith("()")


def training_call(fn, x, calls=1):
    def run():
        for _ in range(calls):
            fn(x).sum().backward()
    return run


def inference_call(fn, x, calls=1):
    def run():
        for _ in range(calls):  # entering no_grad is part of each call: inference code does it per call too
            with torch.no_grad():
                fn(x)
    return run


def modes(numel):
    x = torch.randn(numel, requires_grad=True)
    return {"forward+backward": training_call, "no-grad forward": inference_call}, x


def wall_clock(numel, seconds):
    """{mode: {path: (median us per call, {peer: median ratio to it})}}."""
    table, results = paths(), {}
    names = list(table)
    mode_fns, x = modes(numel)
    for mode, make in mode_fns.items():
        times = alternating_times([make(fn, x, SAMPLE_CALLS) for _, fn in table.values()], repeats=300,
                                  seconds=seconds / 2)
        by_name = dict(zip(names, times))
        results[mode] = {}
        for name, samples in by_name.items():
            ratios = {peer: statistics.median(t / b for t, b in zip(samples, by_name[peer]))
                      for peer in peers_of(name, table)}
            results[mode][name] = (statistics.median(samples) * 1e6 / SAMPLE_CALLS, ratios)
    return results


def peers_of(name, table):
    """The peers a path is compared with: its activation's F function, and nn module for module forms."""
    functional_peer, module_peer = PEERS[table[name][0]]
    return (functional_peer, module_peer) if is_module_form(name) else (functional_peer,)


def _count_inside_callgrind(numel, calls):
    """Runs under valgrind: one zero/dump pair per (mode, path)."""
    helper = callgrind_counts.helper()
    mode_fns, x = modes(numel)
    for mode, make in mode_fns.items():
        for name, (_, fn) in paths().items():
            run = make(fn, x)
            for _ in range(50):  # warm-up: caches, lazy initialisation
                run()
            helper.cg_zero()
            for _ in range(calls):
                run()
            helper.cg_dump(f"{mode}|{name}".encode())


def callgrind(numel, calls):
    """{mode: {path: instructions per call}}, from one process under valgrind --tool=callgrind."""
    results = {}
    counts = callgrind_counts.run([os.path.abspath(__file__), "--inside-callgrind", "--numel", numel,
                                   "--calls", calls])
    for label, total in counts:
        if "|" in label:
            mode, path = label.split("|", 1)
            results.setdefault(mode, {})[path] = total / calls
    return results


def markdown(numel, wall, counts):
    machine = f"{platform.node() or 'this machine'}, {os.cpu_count()} CPUs"
    table = paths()
    lines = [f"# Per-call cost, {numel} elements (benchmarks/per_call_cost.py)", "",
             f"torch {torch.__version__}, 1 thread, {machine}. Wall clock: median us per call and the median over "
             "rounds of the per-round ratio to the peer (paths interleaved in each round). Instructions: "
             "valgrind --tool=callgrind, per call. Ratios to F.silu / F.mish (the path's activation), and for the "
             "module forms also to nn.SiLU() / nn.Mish().", ""]
    for mode in wall:
        lines += [f"## {mode}", "",
                  "| path | us/call | wall ratio to F | wall ratio to nn | instructions/call | instructions ratio to F "
                  "| instructions ratio to nn |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        mode_counts = counts.get(mode, {})
        for name, (us, ratios) in wall[mode].items():
            peers = peers_of(name, table)
            wall_cells = [f"{ratios[peer]:.2f}" for peer in peers] + ["-"] * (2 - len(peers))
            count = mode_counts.get(name)
            count_cells = [f"{count:,.0f}" if count else "-"]
            for peer in peers:
                base = mode_counts.get(peer)
                count_cells.append(f"{count / base:.2f}" if count and base else "-")
            count_cells += ["-"] * (3 - len(count_cells))
            lines.append(f"| {name} | {us:.2f} | " + " | ".join(wall_cells + count_cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--numel", type=int, default=64)
    parser.add_argument("--callgrind", action="store_true", help="also count instructions under callgrind")
    parser.add_argument("--calls", type=int, default=2000, help="calls per path under callgrind")
    parser.add_argument("--out", help="write the table as markdown here")
    parser.add_argument("--inside-callgrind", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.inside_callgrind:
        _count_inside_callgrind(args.numel, args.calls)
        return
    counts = callgrind(args.numel, args.calls) if args.callgrind else {}
    wall = wall_clock(args.numel, args.seconds)
    table = markdown(args.numel, wall, counts)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
