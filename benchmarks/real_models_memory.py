"""Saved-for-backward memory of the models users train (ultralytics, timm, torchvision), unfused, fused,
fused with recompute, and with LeakyReLU(0.1, inplace) in every SiLU's place; exact bytes, any device.

    python benchmarks/real_models_memory.py [--batch 2] [--img-size 256] [--out table.md]

Needs ultralytics, timm and torchvision (the dev requirements). Models are built from config (no weights).
"""
import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# tests/ first: its conftest (the saved-bytes counter) is meant, not benchmarks/conftest.py beside this file
sys.path[0:0] = [str(ROOT / "tests"), str(ROOT)]

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import swishkernels as sk  # noqa: E402
from integrations.models import BUILDERS, build, count_bn_silu_pairs, saved_bytes  # noqa: E402

MiB = 2**20


def measure(name, x):
    model = build(name)
    pairs = count_bn_silu_pairs(model, x)
    unfused = saved_bytes(model, x)
    fused_model = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused_model, example_inputs=x)
    recompute_model = copy.deepcopy(model)
    sk.fuse_bn_swish(recompute_model, recompute=True, example_inputs=x)
    leaky_model = copy.deepcopy(model)
    sk.replace_activations(leaky_model, {nn.SiLU: lambda old: nn.LeakyReLU(0.1, inplace=True)})
    return dict(model=name, pairs=pairs, fused_pairs=len(report.fused), unfused=unfused / MiB,
                fused=saved_bytes(fused_model, x) / MiB,
                recompute=saved_bytes(recompute_model, x, recompute=True) / MiB,
                leaky=saved_bytes(leaky_model, x) / MiB)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    x = torch.rand(args.batch, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
    lines = [f"Saved for backward, MB (MiB), batch {args.batch}, {args.img_size} px, float32, train mode "
             f"(torch {torch.__version__}; benchmarks/real_models_memory.py)", "",
             "| model | BN->SiLU pairs (fused) | unfused | fused | fused + recompute | LeakyReLU(0.1, inplace) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in BUILDERS:
        start = time.time()
        r = measure(name, x)
        lines.append(f"| {name} | {r['pairs']} ({r['fused_pairs']}) | {r['unfused']:.2f} | "
                     f"{r['fused']:.2f} ({r['fused'] / r['unfused']:.2f}x) | "
                     f"{r['recompute']:.2f} ({r['recompute'] / r['unfused']:.2f}x) | "
                     f"{r['leaky']:.2f} ({r['leaky'] / r['unfused']:.2f}x) |")
        print(lines[-1], f"  [{time.time() - start:.0f} s]", file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
