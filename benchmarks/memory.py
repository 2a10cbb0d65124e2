"""Activation memory per activation function: what autograd keeps for backward, and (GPU) peak memory.

    python benchmarks/memory.py [--device cpu] [--batch 2] [--img-size 320] [--cfg yolov3] [--json out.json]

Saved bytes are counted with `torch.autograd.graph.saved_tensors_hooks`: every tensor autograd packs for
backward, each storage once (a conv's input is the previous activation's output: one buffer, not two),
parameters and buffers left out (they exist whatever the activation). The count is exact and the same on any
device, and it is linear in the batch (and in the pixel count): a small CPU batch gives the per-image cost
of a large GPU batch. On a GPU, `--device cuda` also measures `torch.cuda.max_memory_allocated` over one
training step (forward, loss, backward) after `reset_peak_memory_stats`.

Two models: (a) a stack of Conv-BN-Act blocks, where the arithmetic is easy to check by hand, and (b) a
Darknet cfg (yolov3 by default), the seed's network.
"""
import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

if __name__ == "__main__":  # run as a script: import yolo/ and swishkernels/ from this checkout
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import swishkernels as sk  # noqa: E402

MiB = 2**20
LEAKY = "leaky"
# Our Swish with BatchNorm fused into it (issue 6), and with the next layer's copy recomputed.
FUSED = {"swish-fused": False, "swish-fused-recompute": True}
COMPILED = "silu+compile"  # the whole Conv-BN-SiLU stack through torch.compile


# ---- counting what autograd saves: swishkernels.memory (sk.saved_for_backward) -------------------------

def saved_for_backward(fn, *args, exclude=None) -> sk.SavedForBackward:
    """Recompute-mode recipes count as what they keep (the recompute rows build recompute=True layers)."""
    return sk.saved_for_backward(fn, *args, recompute=True, exclude=exclude)


# ---- the activations compared -------------------------------------------------------------------------------

def activation_names(device, compiled=False):
    """leaky, ours per backend (swish[cpu], ...), the peers, mish, prelu, and with `compiled` the
    torch.compile'd Conv-BN-SiLU stack (stack table only: compiling yolov3 takes minutes)."""
    import peers

    names = [LEAKY] + [f"swish[{b}]" for b in peers.our_backends(device)]
    names += list(FUSED)
    names += ["swish-me", "swish-naive", "silu", "mish", "prelu"]
    if compiled:
        names.append(COMPILED)
    return names


def build_activation(name, channels):
    """A module for a table name: a yolo.activations name, optionally with our backend in brackets."""
    from yolo.activations import build_activation as build

    base, _, backend = name.partition("[")
    module = build(base, channels)
    if backend:
        module.backend = backend.rstrip("]")
    return module


def darknet_activation(name):
    """(yolo activation name, backend or None) for Darknet(activation=...)."""
    base, _, backend = name.partition("[")
    return base, backend.rstrip("]") or None


def conv_stack(activation, channels=64, depth=8):
    """depth x (3x3 conv without bias -> BatchNorm2d -> activation), channels in = out."""
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                   build_activation("swish" if activation in FUSED else activation, channels)]
    return _fuse_if_asked(nn.Sequential(*layers), activation)


def _fuse_if_asked(model, name):
    if name in FUSED:
        sk.fuse_bn_swish(model, recompute=FUSED[name])
    return model


def expected_stack_bytes(activation, batch, channels, size, depth, element_size=4):
    """Saved bytes of conv_stack by hand, for the activations whose saving rule is known (tests use it).
    N = one feature map. Per block: conv saves its input (the previous block's output), BN saves its input
    (the conv output) and its batch mean and inverse std (C floats each), and the activation saves:
      leaky (in place) its output, which is the BN output: nothing new;
      ours, swish-me, silu: its input (the BN output), and writes a new output the next conv saves;
      swish-naive: its input, sigmoid(x) and the product: one more map than ours.
    swish-fused: BN+Swish is one node saving its input (the conv output) and per channel mean and 1/std,
      as BN does; swish-fused-recompute: each conv after the first keeps a recipe
      instead of its input, so only the stack input and the fused blocks' inputs remain.
    The last block's output is saved by nothing (no conv follows)."""
    n = batch * channels * size * size * element_size
    stats = depth * 2 * channels * 4
    if activation == LEAKY:
        maps = 1 + 2 * depth
    elif activation.startswith("swish[") or activation in ("swish-me", "silu"):
        maps = 1 + 3 * depth - 1
    elif activation == "swish-naive":
        maps = 1 + 4 * depth - 1
    elif activation in FUSED:
        maps = 1 + depth if FUSED[activation] else 2 * depth
    else:
        raise ValueError(f"no hand-made formula for {activation!r}")
    return maps * n + stats


# ---- measuring a model --------------------------------------------------------------------------------------

@dataclass
class Row:
    activation: str
    saved_mb: Optional[float] = None
    saved_tensors: Optional[int] = None
    peak_step_mb: Optional[float] = None       # GPU: max allocated during a training step
    step_above_base_mb: Optional[float] = None  # GPU: that peak minus what was allocated before the step
    seconds: float = 0.0
    error: Optional[str] = None


def _train_loss(out):
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(o.float().square().mean() for o in outs)


def peak_step_memory(model, x, amp=False):
    """(peak MB, MB above the pre-step allocation) of forward + loss + backward on CUDA. One warm-up step
    first (cuDNN autotuning and gradient buffers are not per-step costs)."""
    def step():
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp), sk.recompute_bn_swish():
            out = model(x)
        _train_loss(out).backward()

    step()
    model.zero_grad(set_to_none=False)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return peak / MiB, (peak - base) / MiB


def measure_model(name, model, x, amp=False):
    """One table row: saved bytes (any device) and, on CUDA, peak memory of a training step."""
    t0 = time.perf_counter()
    row = Row(name)
    try:
        model.train()
        with torch.autocast(x.device.type, dtype=torch.float16, enabled=amp and x.device.type == "cuda"):
            saved = saved_for_backward(model, x, exclude=model)
        row.saved_mb, row.saved_tensors = saved.mib, saved.tensors
        if x.device.type == "cuda":
            row.peak_step_mb, row.step_above_base_mb = peak_step_memory(model, x, amp)
    except Exception as e:  # one activation that cannot run here must not hide the others
        row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    row.seconds = time.perf_counter() - t0
    return row


def _measure_all(names, build, x, amp, deadline):
    """A row per name; names left when `deadline` (time.time()) has passed are marked, not measured."""
    rows = []
    for name in names:
        if deadline is not None and time.time() > deadline:
            rows.append(Row(name, error="skipped: out of time"))
            continue
        try:
            model = build(name)
        except Exception as e:
            rows.append(Row(name, error=f"{type(e).__name__}: {str(e)[:200]}"))
            continue
        rows.append(measure_model(name, model, x, amp))
        del model
        if x.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def stack_table(device="cpu", batch=2, size=64, channels=64, depth=8, names=None, amp=False, compiled=None,
                deadline=None):
    """`compiled` (default: on CUDA only, where inductor compiles in seconds) adds the compiled stack."""
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size, device=device)
    compiled = torch.device(device).type == "cuda" if compiled is None else compiled

    def build(name):
        model = conv_stack("silu" if name == COMPILED else name, channels, depth).to(device)
        return torch.compile(model) if name == COMPILED else model

    return _measure_all(names or activation_names(device, compiled), build, x, amp, deadline)


def _darknet_options(name):
    """yolo.memory options for a table name: activation, fusion, backend."""
    base, backend = darknet_activation(name)
    return dict(activation="swish" if base in FUSED else base, fuse_bn=base in FUSED,
                fuse_bn_recompute=FUSED.get(base, False), backend=backend)


def darknet(cfg, name, num_classes=80, device="cpu"):
    """Darknet with every hidden activation replaced by the table name's (backend pinned if given)."""
    from yolo.memory import build_darknet

    return build_darknet(cfg, num_classes, device=device, **_darknet_options(name))


def darknet_saved(cfg, img_size, batch, name, num_classes=80, device="cpu") -> sk.SavedForBackward:
    """Saved bytes of a Darknet training forward at any `batch` (yolo.memory.darknet_saved: from forwards at
    batch 1 and 2, the bytes being affine in the batch)."""
    from yolo.memory import darknet_saved as saved

    return saved(cfg, img_size, batch, num_classes, device=device, **_darknet_options(name))


def darknet_table(device="cpu", batch=2, img_size=320, cfg="yolov3", names=None, amp=False, deadline=None):
    torch.manual_seed(0)
    x = torch.rand(batch, 3, img_size, img_size, device=device)
    return _measure_all(names or activation_names(device), lambda name: darknet(cfg, name, 80, device), x, amp,
                        deadline)


# ---- the table ----------------------------------------------------------------------------------------------

def _ratio(value, base):
    return f"{value / base:.2f}x" if value is not None and base else "-"


def format_table(rows, title):
    """Markdown with ratios against leaky (the seed's baseline)."""
    leaky = next((r for r in rows if r.activation == LEAKY and r.error is None), None)
    gpu = any(r.peak_step_mb is not None for r in rows)
    head = "| activation | saved for backward (MB) | tensors | vs leaky |"
    rule = "|---|---:|---:|---:|"
    if gpu:
        head += " peak step (MB) | step above base (MB) | vs leaky |"
        rule += "---:|---:|---:|"
    lines = [f"\n{title}\n", head, rule]
    for r in rows:
        if r.error:
            lines.append(f"| {r.activation} | n/a: {r.error} |" + " |" * (6 if gpu else 3))
            continue
        ratio = _ratio(r.saved_mb, leaky and leaky.saved_mb)
        line = f"| {r.activation} | {r.saved_mb:.1f} | {r.saved_tensors} | {ratio} |"
        if gpu:
            line += (f" {r.peak_step_mb:.0f} | {r.step_above_base_mb:.0f} | "
                     f"{_ratio(r.step_above_base_mb, leaky and leaky.step_above_base_mb)} |")
        lines.append(line)
    return "\n".join(lines)


def run(device="cpu", batch=2, img_size=320, cfg="yolov3", stack_size=64, stack_channels=64, stack_depth=8,
        amp=False, with_darknet=True, names=None, compiled=None, deadline=None):
    """Both tables: {"config": ..., "stack": [Row], "darknet": [Row]}. Past `deadline` (time.time()), the
    remaining rows say so instead of being measured."""
    config = dict(device=device, batch=batch, img_size=img_size, cfg=cfg, stack_size=stack_size,
                  stack_channels=stack_channels, stack_depth=stack_depth, amp=amp)
    compiled = torch.device(device).type == "cuda" if compiled is None else compiled
    names = names or activation_names(device, compiled)
    eager = [n for n in names if n != COMPILED]

    def stack(subset):
        return stack_table(device, batch, stack_size, stack_channels, stack_depth, subset, amp, deadline=deadline)

    out = {"config": config, "stack": stack(eager)}
    if with_darknet:
        out["darknet"] = darknet_table(device, batch, img_size, cfg, eager, amp, deadline)
    if COMPILED in names:  # last: compiling takes longest, and under a deadline it is the one to drop
        out["stack"] += stack([COMPILED])
    return out


def format_all(result):
    c = result["config"]
    dtype = "fp16 autocast" if c["amp"] else "fp32"
    text = format_table(result["stack"], f"Conv-BN-Act stack: {c['stack_depth']} blocks of {c['stack_channels']} "
                        f"channels at {c['stack_size']}x{c['stack_size']}, batch {c['batch']}, {dtype}, {c['device']}")
    if "darknet" in result:
        text += "\n" + format_table(result["darknet"], f"{c['cfg']} (80 classes) at {c['img_size']}x{c['img_size']}, "
                                    f"batch {c['batch']}, {dtype}, {c['device']} "
                                    "(saved bytes scale linearly with batch)")
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--cfg", default="yolov3")
    p.add_argument("--stack-size", type=int, default=64)
    p.add_argument("--no-darknet", action="store_true", help="only the Conv-BN-Act stack")
    p.add_argument("--amp", action="store_true", help="CUDA: fp16 autocast, as the trainer uses")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help=f"add the torch.compile'd stack ({COMPILED}) [on for CUDA; on a CPU it costs ~30 s]")
    p.add_argument("--activations", help="comma list (default: all; e.g. leaky,swish[cpu],swish-naive)")
    p.add_argument("--json", help="also write the rows and the machine to this file")
    a = p.parse_args(argv)
    import machine

    names = a.activations.split(",") if a.activations else None
    result = run(a.device, a.batch, a.img_size, a.cfg, stack_size=a.stack_size, amp=a.amp,
                 with_darknet=not a.no_darknet, names=names, compiled=a.compile)
    info = machine.describe(a.device)
    print(f"machine: {machine.one_line(info)}")
    print(format_all(result))
    if a.json:
        blob = {"machine": info, "config": result["config"],
                **{k: [asdict(r) for r in result[k]] for k in ("stack", "darknet") if k in result}}
        Path(a.json).write_text(json.dumps(blob, indent=1))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
