"""End-to-end training step against torch.compile: yolov8n (ultralytics config) and yolov3-tiny (yolo.models.Darknet
with SiLU), each as eager SiLU, fused, fused + recompute, LeakyReLU(0.1, inplace=True), torch.compile of the SiLU
model, and torch.compile + ours (fused + recompute + sk.memory_policy).

    PYTHONPATH=$PWD python benchmarks/compile_step.py [--batch 4] [--img-size 160] [--rounds 7] [--stem NAME]

A step: zero grads, forward, loss (sum of every output), backward. No optimizer (the same for all).
- Memory alive at the start of backward, exact bytes kept for backward (parameters and buffers left out):
  eager variants by sk.saved_for_backward (saved_tensors_hooks; the policy's kept conv outputs pass through
  them too); compiled variants read off the autograd graph (sk.tensors_saved_by_graph: the compiled
  node's saved_tensors are what its backward graph takes; hooks around a compiled call would compile a
  second graph). On a GPU also the peak allocated during the step.
- Step time: the variants take turns in each round (order reversed every other round); reported as the
  median over rounds of each variant's time / eager SiLU's time in the same round.
- Compile time: the first step of a compiled variant minus its median step, reported separately.
Writes <--stem, default compile_step>.md and .json into --out-dir (default benchmarks/results/cpu-<epyc|xeon>-2core/,
by this CPU).
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0:0] = [str(ROOT), str(ROOT / "benchmarks")]  # run as a script: the checkout and its helpers

import torch  # noqa: E402
import torch._dynamo.testing  # noqa: E402
import torch.nn as nn  # noqa: E402
from machine import (  # noqa: E402
    cpu_model,  # noqa: E402
    describe,
    one_line,
)
from torch._dynamo.utils import counters  # noqa: E402

import swishkernels as sk  # noqa: E402

MiB = 2**20
VARIANTS = ("eager SiLU", "fused", "fused + recompute", "LeakyReLU(inplace)", "torch.compile",
            "torch.compile + ours")


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "yolov8n":
        from ultralytics.nn.tasks import DetectionModel
        return DetectionModel("yolov8n.yaml", verbose=False).train()
    if name == "yolov3-tiny":
        from yolo.models import Darknet
        return Darknet("yolov3-tiny", num_classes=80, activation="silu").train()
    raise ValueError(f"compile_step: unknown model {name!r} (yolov8n, yolov3-tiny)")


def flatten(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for item in out for t in flatten(item)]


def loss_of(out):
    return sum(t.float().sum() for t in flatten(out))


class Variant:
    """One way of running the model: how to call it, whether it is compiled, how to count what it keeps."""

    def __init__(self, name, model, compiled=False, recompute=False):
        self.name, self.model, self.compiled, self.recompute = name, model, compiled, recompute
        self.counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
        self.call = torch.compile(model, backend=self.counter) if compiled else model
        self.breaks = 0

    def forward(self, x):
        if self.recompute:
            with sk.recompute_bn_swish():
                return self.call(x)
        return self.call(x)

    def step(self, x):
        for p in self.model.parameters():
            p.grad = None
        out = self.forward(x)
        if self.recompute:
            with sk.recompute_bn_swish():  # unpack hooks stay with the packed tensors; kept for symmetry
                loss_of(out).backward()
        else:
            loss_of(out).backward()

    def kept_bytes(self, x):
        """(all bytes kept for backward, of which batch-sized tensors, of which copies of the weights).
        Parameters and buffers themselves, and any view of them (same storage), are not counted: they
        exist anyway. Compiled graphs also keep copies of the weights (Inductor converts the conv weights to
        channels_last each step and backward takes the converted copy): real memory, per model rather than
        per image, so they are counted, and shown apart."""
        if not self.compiled:
            kept = sk.saved_for_backward(self.model, x, recompute=self.recompute).bytes
            return kept, kept, 0
        out = self.forward(x)
        tensors = sk.tensors_saved_by_graph(flatten(out), exclude=self.model)
        params = list(self.model.parameters())
        total = batch_sized = weight_copies = 0
        for t in tensors:
            nbytes = t.untyped_storage().nbytes()
            total += nbytes
            if t.dim() and t.shape[0] == x.shape[0]:
                batch_sized += nbytes
            elif any(p.shape == t.shape and torch.equal(p.detach(), t) for p in params):
                weight_copies += nbytes
        del out
        return total, batch_sized, weight_copies

    def graphs(self):
        """(graphs compiled, graph breaks) of a compiled variant, None otherwise."""
        return (self.counter.frame_count, self.breaks) if self.compiled else None


def variants(name, x, wanted=VARIANTS):
    """The variants named in `wanted` (eager SiLU always: the ratios are to it)."""
    base = build(name).to(x.device)
    fused = copy.deepcopy(base)
    sk.fuse_bn_swish(fused, example_inputs=x[:2])
    recompute = copy.deepcopy(base)
    sk.fuse_bn_swish(recompute, recompute=True, example_inputs=x[:2])
    leaky = copy.deepcopy(base)
    sk.replace_activations(leaky, {nn.SiLU: lambda old: nn.LeakyReLU(0.1, inplace=True)})
    ours = copy.deepcopy(base)
    sk.fuse_bn_swish(ours, recompute=True, example_inputs=x[:2])
    sk.memory_policy(ours)
    makers = {"eager SiLU": lambda: Variant("eager SiLU", base), "fused": lambda: Variant("fused", fused),
              "fused + recompute": lambda: Variant("fused + recompute", recompute, recompute=True),
              "LeakyReLU(inplace)": lambda: Variant("LeakyReLU(inplace)", leaky),
              "torch.compile": lambda: Variant("torch.compile", copy.deepcopy(base), compiled=True),
              "torch.compile + ours": lambda: Variant("torch.compile + ours", ours, compiled=True, recompute=True)}
    return [make() for name_, make in makers.items() if name_ == "eager SiLU" or name_ in wanted]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def peak_step_bytes(variant, x, device):
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    variant.step(x)
    sync(device)
    return torch.cuda.max_memory_allocated(device) - before


def measure(name, batch, img_size, rounds, device, wanted=VARIANTS):
    x = torch.rand(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0)).to(device)
    runs = variants(name, x, wanted)
    first = {}
    for v in runs:  # the first step compiles
        counters.clear()
        first[v.name] = timed(lambda: v.step(x), device)
        v.breaks = sum(counters["graph_break"].values())
        print(f"  {name} {v.name}: first step {first[v.name]:.1f} s", file=sys.stderr, flush=True)
    times = {v.name: [] for v in runs}
    cpu_times = {v.name: [] for v in runs}  # CPU time of this process: what a loaded machine's waits leave out
    for round_ in range(rounds):  # rounds=0: memory only
        for v in (runs if round_ % 2 == 0 else runs[::-1]):
            cpu_start = time.process_time()
            times[v.name].append(timed(lambda: v.step(x), device))
            cpu_times[v.name].append(time.process_time() - cpu_start)
    base = times["eager SiLU"]
    rows = {}
    kept_eager = None
    for v in runs:
        kept, batch_sized, weight_copies = v.kept_bytes(x)
        kept_eager = kept if kept_eager is None else kept_eager
        median = statistics.median(times[v.name]) if rounds else None
        graphs = v.graphs()
        rows[v.name] = dict(kept_mib=kept / MiB, kept_ratio=kept / kept_eager, batch_sized_mib=batch_sized / MiB,
                            batch_sized_ratio=batch_sized / kept_eager, weight_copies_mib=weight_copies / MiB,
                            other_mib=(kept - batch_sized - weight_copies) / MiB, step_s=median,
                            time_ratio=statistics.median(t / b for t, b in zip(times[v.name], base)) if rounds
                            else None,
                            cpu_time_ratio=statistics.median(
                                t / b for t, b in zip(cpu_times[v.name], cpu_times["eager SiLU"])) if rounds else None,
                            time_q1_q3=statistics.quantiles([t / b for t, b in zip(times[v.name], base)], n=4)[::2]
                            if rounds > 1 else None,
                            compile_s=(first[v.name] - (median or 0)) if v.compiled else None,
                            graphs=graphs[0] if graphs else None, graph_breaks=graphs[1] if graphs else None,
                            peak_mib=(lambda p: None if p is None else p / MiB)(peak_step_bytes(v, x, device)))
    return rows


def _ratio(value, base, fmt="{:.2f}"):
    return "" if value is None or base is None else fmt.format(value / base)


def markdown(results, args, machine: str, load=None) -> str:
    lines = ["# Training step vs torch.compile (benchmarks/compile_step.py)", "",
             f"{machine}; batch {args.batch}, {args.img_size} px, float32, "
             + (f"{args.rounds} interleaved rounds" if args.rounds else "memory only (no timing rounds)")
             + (f"; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (a shared 2-core machine: "
                "read step-time ratios as +-10%, the q1-q3 column shows the spread)" if load else "") + ".",
             "",
             "Memory: exact bytes kept for backward at the start of backward, as a ratio to eager SiLU's. Parameters "
             "and buffers, and views of them, are not counted (they exist anyway). \"activations\": the batch-sized "
             "tensors. \"weight copies\": tensors equal to a parameter but in storage of their own (Inductor "
             "converts the convolution weights to channels_last each step and backward keeps the copy): real "
             "memory, per model not per image. \"other\": the rest (per-channel statistics and the like). "
             "Time: median over rounds of each variant's step time / eager SiLU's in the same round (q1-q3: the "
             "quartiles of that ratio); CPU time: the same with the process's CPU time per step "
             "(time.process_time: with one torch thread, the work done, without the waits for a core that other "
             "load causes). Compile s: first step minus the median step. Graphs / breaks: what dynamo compiled "
             "for the variant.", ""]
    for name, rows in results.items():
        base = rows["eager SiLU"]
        peak_column = base["peak_mib"] is not None
        lines += [f"## {name}", "", "| variant | activations kept (vs eager) | vs torch.compile | weight copies | "
                  "other | all kept (vs eager) | step time vs eager (q1-q3) | vs torch.compile | CPU time vs "
                  "torch.compile | compile s | graphs / breaks |" + (" peak MiB |" if peak_column else ""),
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if peak_column else "")]
        comp = rows.get("torch.compile", base)  # without it (a dry run), the compile columns compare to eager
        for variant, r in rows.items():
            compile_s = f"{r['compile_s']:.0f}" if r["compile_s"] is not None else ""
            graphs = f"{r['graphs']} / {r['graph_breaks']}" if r.get("graphs") is not None else ""
            peak = f" {r['peak_mib']:.0f} |" if peak_column else ""
            spread = (f" ({r['time_q1_q3'][0]:.2f}-{r['time_q1_q3'][1]:.2f})" if r.get("time_q1_q3") else "")
            step = f"{r['time_ratio']:.2f}{spread}" if r["time_ratio"] is not None else ""
            lines.append(f"| {variant} | {r['batch_sized_mib']:.1f} MiB ({r['batch_sized_ratio']:.2f}x) | "
                         f"{_ratio(r['batch_sized_mib'], comp['batch_sized_mib'])}x | "
                         f"{r['weight_copies_mib']:.1f} MiB | {r['other_mib']:.2f} MiB | "
                         f"{r['kept_mib']:.1f} MiB ({r['kept_ratio']:.2f}x) | {step} | "
                         f"{_ratio(r['time_ratio'], comp['time_ratio'])} | "
                         f"{_ratio(r.get('cpu_time_ratio'), comp.get('cpu_time_ratio'))} | {compile_s} | "
                         f"{graphs} |{peak}")
        lines.append("")
    return "\n".join(lines)


def run(models, batch, img_size, rounds, device, out_dir=None, wanted=VARIANTS, stem="compile_step"):
    """Measure every model; returns {model: {variant: row}} and writes <stem>.md + .json into out_dir if given."""
    device = torch.device(device)
    results = {}
    load = [os.getloadavg()[0]]
    for name in models:
        start = time.time()
        results[name] = measure(name, batch, img_size, rounds, device, wanted)
        print(f"{name}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    load.append(os.getloadavg()[0])
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        args = argparse.Namespace(batch=batch, img_size=img_size, rounds=rounds)
        machine = one_line(describe(device))
        (out_dir / f"{stem}.md").write_text(markdown(results, args, machine, load) + "\n")
        record = dict(machine=describe(device), batch=batch, img_size=img_size, rounds=rounds, load_average=load,
                      results=results)
        (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=1))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov3-tiny", "yolov8n"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds; 0: memory only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    default_dir = "cpu-epyc-2core" if "EPYC" in cpu_model() else "cpu-xeon-2core"  # the dirs of earlier tables
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / default_dir)
    parser.add_argument("--stem", default="compile_step", help="output file names: <stem>.md, <stem>.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.models, args.batch, args.img_size, args.rounds, args.device, args.out_dir, stem=args.stem)
    print((args.out_dir / f"{args.stem}.md").read_text())


if __name__ == "__main__":
    main()
