"""Saved-for-backward memory of the models users train (ultralytics, timm, torchvision, pip yolov5, YOLOX,
EfficientNet-PyTorch, effdet, an smp Unet), unfused, fused, fused with recompute, and with
LeakyReLU(0.1, inplace) in every Swish's place; exact bytes, any device.

    python benchmarks/real_models_memory.py [--batch 2] [--img-size 256] [--only NAME ...] [--out table.md]

Needs the dev requirements (requirements-dev.txt, requirements-nodeps.txt). Models are built from config
(no weights).
"""
import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the model builders are the integration tests' (a package)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import swishkernels as sk  # noqa: E402
from tests.integrations.models import BUILDERS, build, count_bn_silu_pairs  # noqa: E402
from tests.integrations.more_models import MORE, build_more, more_inputs, swish_types  # noqa: E402

MiB = 2**20


def _model_and_inputs(name, x):
    if name in BUILDERS:
        return build(name), (x,)
    size = x.shape[-1]
    return build_more(name, torch.float32, size=size), more_inputs(name, torch.float32, size=size)


def _saved(model, inputs, recompute=False):
    """tests' saved_bytes for models with several forward arguments (YOLOX's targets)."""
    torch.manual_seed(0)
    return sk.saved_for_backward(model, *inputs, recompute=recompute).bytes


def measure(name, x):
    model, inputs = _model_and_inputs(name, x)
    pairs = count_bn_silu_pairs(model, inputs, swish_types())
    unfused = _saved(model, inputs)
    fused_model = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused_model, example_inputs=inputs)
    recompute_model = copy.deepcopy(model)
    sk.fuse_bn_swish(recompute_model, recompute=True, example_inputs=inputs)
    leaky_model = copy.deepcopy(model)
    sk.replace_activations(leaky_model, {t: lambda old: nn.LeakyReLU(0.1, inplace=True) for t in swish_types()})
    return dict(model=name, pairs=pairs, fused_pairs=len(report.fused), unfused=unfused / MiB,
                fused=_saved(fused_model, inputs) / MiB,
                recompute=_saved(recompute_model, inputs, recompute=True) / MiB,
                leaky=_saved(leaky_model, inputs) / MiB)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--only", nargs="+", choices=[*BUILDERS, *MORE], help="measure these models only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    x = torch.rand(args.batch, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
    lines = [f"Saved for backward, MB (MiB), batch {args.batch}, {args.img_size} px, float32, train mode "
             f"(torch {torch.__version__}; benchmarks/real_models_memory.py)", "",
             "| model | BN->SiLU pairs (fused) | unfused | fused | fused + recompute | LeakyReLU(0.1, inplace) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in args.only or [*BUILDERS, *MORE]:
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
