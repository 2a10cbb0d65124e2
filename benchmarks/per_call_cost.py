"""Per-call cost of tiny activation calls (64 elements), where Python and dispatch dominate and the kernels
do not matter: forward+backward, and a no-grad forward. Peers in the same run: F.silu, nn.SiLU(), and the
op called directly.

    PYTHONPATH=$PWD python benchmarks/per_call_cost.py [--seconds 20] [--callgrind] [--out FILE.md]

Wall clock: the paths take turns within each round (load from other processes hits all of them alike);
reported as the median microseconds per call and the median over rounds of each path's ratio to F.silu
in the same round. `--callgrind`: the same calls counted in instructions under valgrind's callgrind
(repeatable on a loaded machine where times are not): a small C helper (built with cc, valgrind's
callgrind.h) zeroes the counters before each path's loop and dumps them after; instructions per call =
the dump's total / calls.
"""
import argparse
import ctypes
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from timing import alternating_times

import swishkernels as sk

CALLGRIND_HELPER = r"""
#include <valgrind/callgrind.h>
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char* label) { CALLGRIND_DUMP_STATS_AT(label); }
"""


def paths():
    """name -> function of one tensor. F.silu first: the ratios are to it."""
    table = {"F.silu": F.silu, "nn.SiLU()": nn.SiLU(), "sk.swish": sk.swish, "sk.Swish()": sk.Swish()}
    if "cpu" in sk.available_backends("cpu"):
        table["torch.ops.swishkernels.swish_forward"] = torch.ops.swishkernels.swish_forward
        table["torch.ops.swishkernels.swish_forward.default"] = torch.ops.swishkernels.swish_forward.default
    return table


def training_call(fn, x):
    def run():
        fn(x).sum().backward()
    return run


def inference_call(fn, x):
    def run():
        with torch.no_grad():
            fn(x)
    return run


def modes(numel):
    x = torch.randn(numel, requires_grad=True)
    return {"forward+backward": training_call, "no-grad forward": inference_call}, x


def wall_clock(numel, seconds):
    """{mode: {path: (median us, median ratio to F.silu)}}."""
    table, results = paths(), {}
    mode_fns, x = modes(numel)
    for mode, make in mode_fns.items():
        times = alternating_times([make(fn, x) for fn in table.values()], repeats=1000, seconds=seconds / 2)
        base = times[0]
        results[mode] = {name: (statistics.median(samples) * 1e6,
                                statistics.median(t / b for t, b in zip(samples, base)))
                         for name, samples in zip(table, times)}
    return results


def _count_inside_callgrind(numel, calls):
    """Runs under valgrind: one zero/dump pair per (mode, path)."""
    helper = ctypes.CDLL(os.environ["PER_CALL_CALLGRIND_HELPER"])
    mode_fns, x = modes(numel)
    for mode, make in mode_fns.items():
        for name, fn in paths().items():
            run = make(fn, x)
            for _ in range(50):  # warm-up: caches, lazy initialisation
                run()
            helper.cg_zero()
            for _ in range(calls):
                run()
            helper.cg_dump(f"{mode}|{name}".encode())


def callgrind(numel, calls):
    """{mode: {path: instructions per call}}, from one process under valgrind --tool=callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        source, library = os.path.join(tmp, "cg.c"), os.path.join(tmp, "libcg.so")
        with open(source, "w") as f:
            f.write(CALLGRIND_HELPER)
        subprocess.run(["cc", "-shared", "-fPIC", "-O1", source, "-o", library], check=True)
        env = dict(os.environ, PER_CALL_CALLGRIND_HELPER=library, OMP_NUM_THREADS="1")
        command = ["valgrind", "--tool=callgrind", "--collect-atstart=yes", f"--callgrind-out-file={tmp}/cg.out",
                   sys.executable, os.path.abspath(__file__), "--inside-callgrind", "--numel", str(numel),
                   "--calls", str(calls)]
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=3600)
        results = {}
        for name in sorted(os.listdir(tmp)):
            if not name.startswith("cg.out"):
                continue
            text = open(os.path.join(tmp, name)).read()
            label = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.M)
            total = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
            if label and total and "|" in label.group(1):
                mode, path = label.group(1).split("|", 1)
                results.setdefault(mode, {})[path] = int(total.group(1)) / calls
        return results


def markdown(numel, wall, counts):
    machine = f"{platform.node() or 'this machine'}, {os.cpu_count()} CPUs"
    lines = [f"# Per-call cost, {numel} elements (benchmarks/per_call_cost.py)", "",
             f"torch {torch.__version__}, 1 thread, {machine}. Wall clock: median us per call and the median over "
             "rounds of the per-round ratio to F.silu (paths interleaved in each round). Instructions: "
             "valgrind --tool=callgrind, per call, and their ratio to F.silu.", ""]
    for mode in wall:
        lines += [f"## {mode}", "",
                  "| path | us/call | ratio to F.silu (wall) | instructions/call | ratio (instructions) |",
                  "|---|---:|---:|---:|---:|"]
        base = counts.get(mode, {}).get("F.silu")
        for name, (us, ratio) in wall[mode].items():
            count = counts.get(mode, {}).get(name)
            count_cells = (f"{count:,.0f} | {count / base:.2f}" if count and base else "- | -")
            lines.append(f"| {name} | {us:.1f} | {ratio:.2f} | {count_cells} |")
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
