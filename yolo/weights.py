"""Weights into models: trainer checkpoints (last.pt, best.pt), bare state_dicts and Darknet .weights.

    model, info = build_model("runs/train/exp/weights/best.pt")          # cfg, classes, names from the file
    model, info = build_model("yolov3.weights", cfg="yolov3")            # class count from the file size
    report = load_into(model, "darknet53.conv.74")                       # --weights of the trainer

Converting: `python -m yolo.weights export --weights last.pt --out model.weights [--cutoff N]` and
`python -m yolo.weights import --weights yolov3.weights --cfg yolov3 --out yolov3.pt`.
"""
import sys
from pathlib import Path
from typing import List, Optional, Union

import torch
import torch.nn as nn

from yolo.darknet_weights import (
    WeightsError,
    cutoff_from_name,
    infer_num_classes,
    load_darknet_weights,
    read_weights_file,
    save_darknet_weights,
)

DARKNET_SUFFIXES = (".weights",)


def is_darknet(path):
    return Path(path).suffix in DARKNET_SUFFIXES or cutoff_from_name(path) is not None


def read_pt(path):
    """-> (state_dict, info) from a .pt: a trainer checkpoint (its EMA weights; info has cfg, nc, names,
    activation) or a bare state_dict (info empty). WeightsError for anything else."""
    from yolo.utils.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and "ema" in ckpt and "cfg" in ckpt:
        info = {k: ckpt.get(k) for k in ("cfg", "nc", "names", "activation")}
        info["opt"] = ckpt.get("opt") or {}
        info["hyp"] = ckpt.get("hyp")
        return ckpt["ema"]["model"], info
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt, {}
    raise WeightsError(f"{path}: neither a trainer checkpoint nor a state_dict of tensors")


def head_prefixes(model):
    """state_dict prefixes of the convs feeding the [yolo] heads (the layers whose size is the class count)."""
    return {f"module_list.{i - 1}." for i, m in enumerate(model.module_list) if m in model.yolo_layers}


def transfer(model, state, source, fresh_heads=True):
    """Load `state` into `model`. Every tensor must match in name and shape, except (with `fresh_heads`) the
    head convs when the class counts differ: those keep their fresh initialization. Returns a one-line
    report; WeightsError naming the layer and both shapes otherwise."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(f"{source}: does not fit {model.cfg_path} (missing {', '.join(missing[:3]) or 'none'}"
                           f"{'...' if len(missing) > 3 else ''}; unexpected {', '.join(unexpected[:3]) or 'none'}"
                           f"{'...' if len(unexpected) > 3 else ''}); another cfg or activation?")
    heads = head_prefixes(model)
    keep, skipped = {}, []
    for key, value in state.items():
        if value.shape == own[key].shape:
            keep[key] = value
        elif fresh_heads and any(key.startswith(p) for p in heads):
            skipped.append(key)
        else:
            raise WeightsError(f"{source}: layer {key} has shape {tuple(value.shape)} but the model's is "
                               f"{tuple(own[key].shape)}")
    model.load_state_dict({**own, **keep})
    if skipped:
        return f"{source}: loaded {len(keep)}/{len(own)} tensors; the {len(heads)} heads start fresh " \
               f"({model.num_classes} classes, the weights have another count)"
    return f"{source}: loaded all {len(own)} tensors"


def load_into(model, path, cutoff=None):
    """Initialize `model` (a Darknet) from a .pt or Darknet .weights file in place; returns a report line.
    Darknet files: `cutoff` (default: N of a '*.conv.N' name) loads only layers < N; a full file with
    another class count loads all but the heads."""
    path = Path(path)
    if not is_darknet(path):
        state, _ = read_pt(path)
        return transfer(model, state, path)
    cutoff = cutoff if cutoff is not None else cutoff_from_name(path)
    if cutoff is not None:
        out = load_darknet_weights(model, path, cutoff)
        return f"{path}: loaded layers 0..{cutoff - 1} ({out['layers']} convolutions, {out['values']} values)"
    nc = file_num_classes(model, path)
    if nc is None or nc == model.num_classes:
        out = load_darknet_weights(model, path)  # raises naming the layer where it does not fit
        return f"{path}: loaded all {out['layers']} convolutions"
    from yolo.models import Darknet

    donor = Darknet(model.cfg_path, num_classes=nc, activation=model.activation_name)
    load_darknet_weights(donor, path)
    return transfer(model, donor.state_dict(), path)


def file_num_classes(model, path, cutoff=None):
    """The class count a Darknet file was trained with, from its size and the model's cfg (None if none fits)."""
    return infer_num_classes(model, len(read_weights_file(path)[2]), cutoff)


def build_model(weights: Union[str, Path], cfg: Optional[str] = None, num_classes: Optional[int] = None,
                activation: Optional[str] = None, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A Darknet in eval mode from any weights file -> (model, info {cfg, nc, names, opt, hyp}).

    Trainer checkpoints carry their cfg and classes. A bare state_dict needs `cfg` (classes from its head
    shapes); a Darknet .weights file needs `cfg` (classes from its size unless `num_classes` is given)."""
    from yolo.models import Darknet

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights not found: {weights}")
    if is_darknet(weights):
        if cfg is None:
            raise WeightsError(f"{weights}: a Darknet .weights file needs --cfg (the .cfg it was trained with)")
        model = Darknet(cfg, num_classes=1, activation=activation)
        nc = num_classes or file_num_classes(model, weights)
        if nc is None:
            raise WeightsError(f"{weights}: its size fits {cfg} with no class count; another cfg?")
        model = Darknet(cfg, num_classes=nc, activation=activation)
        load_darknet_weights(model, weights, cutoff_from_name(weights))
        info = {"cfg": str(cfg), "nc": nc, "names": None, "opt": {}, "hyp": None}
    else:
        state, info = read_pt(weights)
        if not info:
            if cfg is None:
                raise WeightsError(f"{weights}: a bare state_dict needs --cfg (the .cfg it was trained with)")
            probe = Darknet(cfg, num_classes=1, activation=activation)
            key = next(iter(sorted(head_prefixes(probe)))) + "conv.weight"
            if key not in state:
                raise WeightsError(f"{weights}: has no {key}; not a state_dict of {cfg}?")
            nc = state[key].shape[0] // probe.yolo_layers[0].na - 5
            info = {"cfg": str(cfg), "nc": nc, "names": None, "opt": {}, "hyp": None, "activation": activation}
        elif num_classes is not None and num_classes != info["nc"]:
            raise WeightsError(f"{weights}: trained for {info['nc']} classes, not {num_classes}")
        model = Darknet(info["cfg"], num_classes=info["nc"], activation=activation or info.get("activation"),
                        scale_xy=info["opt"].get("scale_xy"))  # it decodes boxes: not in the weights
        transfer(model, state, weights, fresh_heads=False)  # built from the file's own description: all fit
    model.names = info.get("names")
    return model.to(device).eval(), info


# ---- conversion CLI ----------------------------------------------------------------------------------------

PROG = "python -m yolo.weights"


def main(argv: Optional[List[str]] = None) -> int:
    """Exit status 0 done, 2 bad input or a file that cannot be read or written (one line naming the file)."""
    from yolo.train_args import OneLineParser
    from yolo.utils.errors import report

    p = OneLineParser(prog=PROG, description="Convert between trainer .pt and Darknet .weights.")
    sub = p.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help=".pt -> Darknet .weights")
    imp = sub.add_parser("import", help="Darknet .weights -> a .pt state_dict")
    for q in (exp, imp):
        q.add_argument("--weights", required=True)
        q.add_argument("--out", required=True)
        q.add_argument("--cfg", help="the model's .cfg (needed for state_dicts and .weights)")
        q.add_argument("--num-classes", type=int, help="class count of a .weights file [from its size]")
        q.add_argument("--activation", help="activation of the model, when not leaky")
    exp.add_argument("--cutoff", type=int, help="write only layers < N (a backbone file)")
    args = p.parse_args(argv)
    try:
        model, info = build_model(args.weights, cfg=args.cfg, num_classes=args.num_classes,
                                  activation=args.activation)
        if args.command == "export":
            save_darknet_weights(model, args.out, cutoff=args.cutoff)
        else:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.out)
    except (WeightsError, OSError, ValueError) as e:  # OSError: e.g. a read-only or full --out
        return report(PROG, e)
    print(f"wrote {args.out} ({info['cfg']}, {info['nc']} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
