"""Darknet `.weights` files (the reference binary layout, as darknet's load_weights/save_weights use it).

    header: int32 major, minor, revision; then `seen` (images trained on): int64 when major*10+minor >= 2,
            else int32
    then for each [convolutional] layer in cfg order, float32:
            with batch_normalize: BN bias (beta), BN weight (gamma), running mean, running variance
            without:              conv bias
            then the conv weights (out, in/groups, k, k), row-major

A `cutoff` N reads or writes only layers < N (layer indices as in the cfg, [net] excluded): backbone-only
files such as darknet53.conv.74 (`darknet partial ... 74`) hold layers 0..73.
"""
import re
from pathlib import Path

import numpy as np

EXPORT_VERSION = (0, 2, 5)  # what darknet itself writes today: seen as int64


class WeightsError(ValueError):
    """A weights file that does not fit the model; the message names the file and the layer."""


def cutoff_from_name(path):
    """N of a backbone file named like `darknet53.conv.74`, else None."""
    m = re.search(r"\.conv\.(\d+)$", Path(path).name)
    return int(m.group(1)) if m else None


def conv_layers(model, cutoff=None):
    """(layer index, cfg line, [tensors in file order]) for every [convolutional] layer < cutoff."""
    out = []
    for i, (mdef, module) in enumerate(zip(model.module_defs, model.module_list)):
        if cutoff is not None and i >= cutoff:
            break
        if mdef["type"] != "convolutional":
            continue
        conv, bn = module.conv, getattr(module, "bn", None)
        if bn is not None:
            tensors = [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
        else:
            tensors = [conv.bias, conv.weight]
        out.append((i, mdef["_line"], tensors))
    return out


def value_count(model, cutoff=None):
    """How many float32 values the layers < cutoff occupy in a .weights file."""
    return sum(t.numel() for _, _, tensors in conv_layers(model, cutoff) for t in tensors)


def read_weights_file(path):
    """-> (version (major, minor, revision), seen, float32 values after the header)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 16:
        raise WeightsError(f"{path}: {len(data)} bytes, too short for a Darknet .weights header")
    major, minor, revision = (int(v) for v in np.frombuffer(data[:12], np.int32))
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    seen = int(np.frombuffer(data[12:20] if wide else data[12:16], np.int64 if wide else np.int32)[0])
    body = data[20 if wide else 16:]
    if len(body) % 4:
        raise WeightsError(f"{path}: {len(body)} bytes after the header is not a whole number of float32 values")
    return (major, minor, revision), seen, np.frombuffer(body, np.float32)


def load_darknet_weights(model, path, cutoff=None):
    """Copy the values of a .weights file into `model` (a yolo.models.Darknet) in place.

    cutoff None: the file must hold exactly the whole model. With a cutoff, layers < cutoff are read and
    the file may hold more (e.g. the backbone of a full yolov3.weights). Returns {version, seen, layers,
    values}. A file that ends early, or (without cutoff) holds more, raises WeightsError naming the layer."""
    import torch

    version, seen, values = read_weights_file(path)
    layers = conv_layers(model, cutoff)
    ptr = 0
    with torch.no_grad():
        for i, line, tensors in layers:
            need = sum(t.numel() for t in tensors)
            if ptr + need > len(values):
                raise WeightsError(
                    f"{path}: ends inside layer {i} ([convolutional] at {model.cfg_path}:{line}): it needs {need} "
                    f"values, {len(values) - ptr} are left; another cfg or class count, or a backbone file "
                    "needing a cutoff?")
            for t in tensors:
                n = t.numel()
                t.copy_(torch.from_numpy(values[ptr:ptr + n].copy()).view_as(t))
                ptr += n
    if cutoff is None and ptr != len(values):
        raise WeightsError(f"{path}: holds {len(values)} values but {model.cfg_path} with {model.num_classes} "
                           f"classes needs {ptr}; another cfg or class count?")
    return {"version": version, "seen": seen, "layers": len(layers), "values": ptr}


def save_darknet_weights(model, path, cutoff=None, seen=0):
    """Write `model`'s layers < cutoff (all by default) as a .weights file darknet can read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.array(EXPORT_VERSION, np.int32).tofile(f)
        np.array([seen], np.int64).tofile(f)
        for _, _, tensors in conv_layers(model, cutoff):
            for t in tensors:
                t.detach().float().cpu().numpy().astype(np.float32).tofile(f)
    return path


def infer_num_classes(model, n_values, cutoff=None):
    """The class count for which `model`'s cfg needs exactly `n_values` values, or None: only the convs
    feeding [yolo] heads change size with the class count, by na * (in_channels * k * k / groups + 1) each."""
    heads = [(i - 1, head) for i, head in enumerate(model.module_list) if head in model.yolo_layers
             and (cutoff is None or i - 1 < cutoff)]
    per_class = sum(head.na * (model.module_list[j].conv.weight[0].numel() + 1) for j, head in heads)
    if not per_class:
        return None
    extra, rem = divmod(n_values - value_count(model, cutoff), per_class)
    nc = model.num_classes + extra
    return nc if rem == 0 and nc >= 1 else None
