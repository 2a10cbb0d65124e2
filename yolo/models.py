"""Darknet: build a YOLOv3-family model from a Darknet `.cfg` (see `yolo/cfg/`).

    model = Darknet("yolov3", num_classes=80, activation="swish")
    model.train(); heads = model(x)    # list of (B, na, H/stride, W/stride, 5 + nc) raw logits
    model.eval();  pred = model(x)     # (B, N, 5 + nc): xywh in input pixels, objectness, class probs

`activation` replaces every hidden non-linearity of the cfg (leaky in the stock cfgs) by an activation from
`yolo.activations`, which is how the trainer compares LeakyReLU, Swish and friends on the same network.
`scale_xy` (also a [yolo] section's `scale_x_y=`) and `head_bias` are the seed thread's other knobs.
"""
import copy
import math
from collections import Counter
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn

from .activations import ACTIVATIONS, build_activation
from .cfg_parser import CfgError, parse_cfg, resolve_cfg

# cfg activations that are part of the architecture rather than a choice of non-linearity: never overridden.
_FIXED_ACTIVATIONS = ("linear", "logistic")
# cfg spellings beyond yolo.activations.ACTIVATIONS.
_CFG_ONLY_ACTIVATIONS = {"logistic": nn.Sigmoid, "relu": lambda: nn.ReLU(inplace=True)}


class Shortcut(nn.Module):
    """Darknet [shortcut]: residual sum with an earlier layer's output."""

    def __init__(self, source):
        super().__init__()
        self.source = source

    def forward(self, x, outputs):
        return x + outputs[self.source]


class Route(nn.Module):
    """Darknet [route]: an earlier layer's output, or several concatenated along channels."""

    def __init__(self, sources):
        super().__init__()
        self.sources = sources

    def forward(self, x, outputs):
        if len(self.sources) == 1:
            return outputs[self.sources[0]]
        return torch.cat([outputs[i] for i in self.sources], 1)


class YOLOLayer(nn.Module):
    """A detection head: reshapes a conv output into (B, na, ny, nx, 5 + nc) and decodes it to boxes.

    `anchors` are (na, 2) widths/heights in input pixels; `stride` is the head's downsampling factor.
    `scale_xy` stretches the box-centre sigmoid around 0.5 (Darknet's `scale_x_y`): the centre offset in its
    cell is scale_xy * sigmoid(t) - (scale_xy - 1) / 2, so with scale_xy > 1 a centre on the cell's edge (0 or
    1) is reached by a finite logit instead of only as t -> -inf/+inf.
    """

    def __init__(self, anchors, num_classes, stride, scale_xy=1.0):
        super().__init__()
        self.scale_xy = float(scale_xy)
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32).view(-1, 2))
        self.na = self.anchors.shape[0]
        self.nc = num_classes
        self.no = num_classes + 5
        self.stride = stride

    def forward(self, x):
        bs, _, ny, nx = x.shape
        return x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

    def cell_offset(self, t):
        """Box-centre logits -> offset inside the cell (0..1 for scale_xy 1); used by decode and the loss."""
        if self.scale_xy == 1.0:
            return torch.sigmoid(t)
        return torch.sigmoid(t) * self.scale_xy - (self.scale_xy - 1) / 2

    def decode(self, p):
        """Raw head output -> (B, na*ny*nx, 5 + nc): xy = (cell_offset + cell) * stride, wh = exp * anchor."""
        p = p.float()  # exp() of fp16 logits overflows; boxes are decoded in fp32
        bs, na, ny, nx, no = p.shape
        ys, xs = torch.meshgrid(torch.arange(ny, device=p.device), torch.arange(nx, device=p.device),
                                indexing="ij")
        grid = torch.stack((xs, ys), -1).view(1, 1, ny, nx, 2).float()
        xy = (self.cell_offset(p[..., :2]) + grid) * self.stride
        wh = torch.exp(p[..., 2:4]) * self.anchors.view(1, na, 1, 1, 2)
        return torch.cat((xy, wh, torch.sigmoid(p[..., 4:])), -1).view(bs, -1, no)


class Darknet(nn.Module):
    """A YOLOv3-family detector built from a Darknet cfg.

    cfg: a bundled name ("yolov3", "yolov3-tiny", "yolov3-spp") or a path to a .cfg file.
    num_classes: overrides `classes` of every [yolo] and the filters of the conv feeding it.
    activation: a `yolo.activations` name that replaces every non-linear activation of the cfg
        ("linear" and "logistic" layers are kept: they are part of the architecture).
    scale_xy: overrides `scale_x_y` of every [yolo] (default: the cfg's, else 1.0; see YOLOLayer).
    head_bias: initial objectness and class logits of every head (the seed thread's -5); default None starts
        them at their priors (about 8 objects per 640-px image, class probability 0.6 / nc).

    Attributes: num_classes, yolo_layers (the YOLOLayer heads, each with .anchors, .stride, .na, .nc),
    module_defs (the parsed layer sections, with the overrides applied), net_info (the [net] section),
    activation_name, cfg_path.
    """

    def __init__(self, cfg: Union[str, Path], num_classes: Optional[int] = None, activation: Optional[str] = None,
                 scale_xy: Optional[float] = None, head_bias: Optional[float] = None):
        super().__init__()
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid names: {', '.join(ACTIVATIONS)}")
        for name, value in (("scale_xy", scale_xy), ("head_bias", head_bias)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if scale_xy is not None and scale_xy <= 0:
            raise ValueError(f"scale_xy must be > 0, got {scale_xy!r}")
        self.cfg_path = resolve_cfg(cfg)
        self.net_info, module_defs = parse_cfg(self.cfg_path)
        self.module_defs = _apply_overrides(module_defs, self.cfg_path, num_classes, activation, scale_xy)
        self.activation_name = activation or _dominant_activation(self.module_defs)
        self.module_list, self.saved_outputs = _build_layers(self.module_defs, self.net_info, self.cfg_path)
        self.yolo_layers = [m for m in self.module_list if isinstance(m, YOLOLayer)]
        if not self.yolo_layers:
            raise CfgError(self.cfg_path, self.module_defs[-1]["_line"], "the cfg has no [yolo] layer")
        self.num_classes = self.yolo_layers[0].nc
        _init_head_biases(self.module_list, head_bias)

    def forward(self, x: torch.Tensor, return_raw: bool = False
                ) -> Union[torch.Tensor, List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """train(): list of raw heads. eval(): decoded (B, N, 5 + nc) tensor, plus the raw heads as a
        second value when `return_raw` (to compute a validation loss from the same forward pass)."""
        outputs, heads = [], []
        for i, module in enumerate(self.module_list):
            if isinstance(module, (Shortcut, Route)):
                x = module(x, outputs)
            elif isinstance(module, YOLOLayer):
                heads.append(module(x))
            else:
                x = module(x)
            outputs.append(x if i in self.saved_outputs else None)  # keep only what a later layer reads
        if self.training:
            return heads
        decoded = torch.cat([yolo.decode(p) for yolo, p in zip(self.yolo_layers, heads)], 1)
        return (decoded, heads) if return_raw else decoded


# ---- cfg -> modules ------------------------------------------------------------------------------------------

def _apply_overrides(module_defs, path, num_classes, activation, scale_xy=None):
    """A copy of the layer defs with `num_classes`, `activation` and `scale_xy` written in, so the defs
    describe the model."""
    defs = copy.deepcopy(module_defs)
    for i, mdef in enumerate(defs):
        if mdef["type"] == "yolo" and scale_xy is not None:
            mdef["scale_x_y"] = float(scale_xy)
        if activation is not None and mdef["type"] in ("convolutional", "shortcut"):
            if mdef.get("activation", "linear") not in _FIXED_ACTIVATIONS:
                mdef["activation"] = activation
        if mdef["type"] == "yolo" and num_classes is not None:
            if num_classes < 1:
                raise ValueError(f"num_classes must be >= 1, got {num_classes}")
            if i == 0 or defs[i - 1]["type"] != "convolutional":
                raise CfgError(path, mdef["_line"], "num_classes override needs a [convolutional] right before [yolo]")
            mdef["classes"] = num_classes
            na = len(_as_list(mdef["mask"])) if "mask" in mdef else len(_anchor_pairs(mdef, path))
            defs[i - 1]["filters"] = na * (num_classes + 5)
    return defs


def _dominant_activation(module_defs):
    """The cfg's most used non-linearity (what `activation_name` reports when nothing was overridden)."""
    counts = Counter(d.get("activation", "linear") for d in module_defs if d["type"] == "convolutional")
    hidden = [(n, name) for name, n in counts.items() if name not in _FIXED_ACTIVATIONS]
    return max(hidden)[1] if hidden else "linear"


def _build_layers(module_defs, net_info, path):
    """nn.ModuleList for the layer defs, and the set of layer indices whose outputs later layers read."""
    layers = nn.ModuleList()
    channels, strides = [], []  # output channels / downsampling factor of every layer so far
    saved = set()
    in_channels, stride = _int(net_info, "channels", path, default=3), 1
    for i, mdef in enumerate(module_defs):
        kind = mdef["type"]
        if kind == "convolutional":
            module, in_channels, stride = _conv(mdef, in_channels, stride, path)
        elif kind == "maxpool":
            module, stride = _maxpool(mdef, stride, path)
        elif kind == "upsample":
            factor = _int(mdef, "stride", path, default=2)
            module, stride = nn.Upsample(scale_factor=factor, mode="nearest"), stride / factor
        elif kind == "route":
            sources = [_source(j, i, mdef, path) for j in _as_list(_required(mdef, "layers", path))]
            if len({strides[j] for j in sources}) != 1:
                raise CfgError(path, mdef["_line"], f"[route] joins layers of different strides {sources}")
            module, in_channels, stride = Route(sources), sum(channels[j] for j in sources), strides[sources[0]]
            saved.update(sources)
        elif kind == "shortcut":
            source = _source(_required(mdef, "from", path), i, mdef, path)
            if channels[source] != in_channels or strides[source] != stride:
                raise CfgError(path, mdef["_line"], f"[shortcut] from layer {source} has a different shape")
            module = Shortcut(source)
            if mdef.get("activation", "linear") != "linear":
                module = _ShortcutWithActivation(module, _activation(mdef, in_channels, path))
            saved.add(source)
        else:  # yolo
            module = _yolo(mdef, layers, stride, path)
        layers.append(module)
        channels.append(in_channels)
        strides.append(stride)
    return layers, saved


class _ShortcutWithActivation(Shortcut):
    def __init__(self, shortcut, act):
        super().__init__(shortcut.source)
        self.act = act

    def forward(self, x, outputs):
        return self.act(super().forward(x, outputs))


def _conv(mdef, in_channels, stride, path):
    filters = _int(mdef, "filters", path)
    size = _int(mdef, "size", path, default=1)
    conv_stride = _int(mdef, "stride", path, default=1)
    bn = bool(_int(mdef, "batch_normalize", path, default=0))
    padding = size // 2 if _int(mdef, "pad", path, default=0) else _int(mdef, "padding", path, default=0)
    groups = _int(mdef, "groups", path, default=1)
    if filters < 1 or size < 1 or conv_stride < 1 or in_channels % groups or filters % groups:
        raise CfgError(path, mdef["_line"], f"invalid [convolutional] (filters={filters}, size={size}, "
                                            f"stride={conv_stride}, groups={groups}, in_channels={in_channels})")
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(in_channels, filters, size, conv_stride, padding, groups=groups, bias=not bn))
    if bn:
        seq.add_module("bn", nn.BatchNorm2d(filters, momentum=0.03, eps=1e-4))  # Ultralytics 2020 values
    if mdef.get("activation", "linear") != "linear":
        seq.add_module("act", _activation(mdef, filters, path))
    return seq, filters, stride * conv_stride


def _maxpool(mdef, stride, path):
    pool_stride = _int(mdef, "stride", path, default=1)
    size = _int(mdef, "size", path, default=pool_stride)
    if pool_stride == 1 and size % 2 == 0:
        # Darknet keeps the spatial size of an even stride-1 pool by padding right/bottom (yolov3-tiny: size 2).
        lo = (size - 1) // 2
        return nn.Sequential(nn.ZeroPad2d((lo, size - 1 - lo, lo, size - 1 - lo)), nn.MaxPool2d(size, 1)), stride
    return nn.MaxPool2d(size, pool_stride, padding=(size - 1) // 2), stride * pool_stride


def _yolo(mdef, layers, stride, path):
    anchors = _anchor_pairs(mdef, path)
    mask = _as_list(mdef.get("mask", list(range(len(anchors)))))
    if any(not isinstance(m, int) or not 0 <= m < len(anchors) for m in mask):
        raise CfgError(path, mdef["_line"], f"[yolo] mask {mask} does not index the {len(anchors)} anchors")
    num_classes = _int(mdef, "classes", path)
    if stride != int(stride) or stride < 1:
        raise CfgError(path, mdef["_line"], f"[yolo] at a non-integer stride {stride}")
    scale_xy = mdef.get("scale_x_y", 1.0)
    if isinstance(scale_xy, bool) or not isinstance(scale_xy, (int, float)) or not 0 < scale_xy < math.inf:
        raise CfgError(path, mdef["_line"], f"[yolo] scale_x_y={scale_xy!r} must be a number > 0")
    head = YOLOLayer([anchors[m] for m in mask], num_classes, int(stride), scale_xy)
    conv = layers[-1][0] if layers and isinstance(layers[-1], nn.Sequential) else None
    if not isinstance(conv, nn.Conv2d) or conv.out_channels != head.na * head.no:
        raise CfgError(path, mdef["_line"], f"[yolo] needs a [convolutional] right before it with "
                                            f"{head.na}*(5+{num_classes}) = {head.na * head.no} filters")
    return head


def _anchor_pairs(mdef, path):
    values = _as_list(_required(mdef, "anchors", path))
    if len(values) % 2 or not all(isinstance(v, (int, float)) and v > 0 for v in values):
        raise CfgError(path, mdef["_line"], "[yolo] anchors must be positive w,h pairs")
    if "num" in mdef and mdef["num"] != len(values) // 2:
        raise CfgError(path, mdef["_line"], f"[yolo] num={mdef['num']} but {len(values) // 2} anchors given")
    return [(float(values[k]), float(values[k + 1])) for k in range(0, len(values), 2)]


def _activation(mdef, channels, path):
    name = mdef.get("activation", "linear")
    if name in _CFG_ONLY_ACTIVATIONS:
        return _CFG_ONLY_ACTIVATIONS[name]()
    if name not in ACTIVATIONS:
        raise CfgError(path, mdef["_line"], f"unknown activation {name!r} "
                                            f"(valid: {', '.join(ACTIVATIONS + tuple(_CFG_ONLY_ACTIVATIONS))})")
    return build_activation(name, channels)


def _init_head_biases(module_list, head_bias=None):
    """Start objectness and class logits at their priors (Ultralytics 2020), so the first steps are stable:
    about 8 objects per 640-px image spread over the head's cells, class probability 0.6 / nc. With
    `head_bias` (the seed thread's row 9: -5), every objectness and class bias is set to that value instead."""
    for i, module in enumerate(module_list):
        if not isinstance(module, YOLOLayer):
            continue
        conv = module_list[i - 1][0]
        if conv.bias is None:
            continue
        with torch.no_grad():
            b = conv.bias.view(module.na, module.no)
            if head_bias is not None:
                b[:, 4:] = head_bias
                continue
            b[:, 4] += math.log(8 / (640 / module.stride) ** 2)
            b[:, 5:] += math.log(0.6 / (module.nc - 0.99))


# ---- small cfg readers that report file:line ------------------------------------------------------------------

def _required(mdef, key, path):
    if key not in mdef:
        raise CfgError(path, mdef["_line"], f"[{mdef['type']}] is missing {key!r}")
    return mdef[key]


def _int(mdef, key, path, default=None):
    value = mdef.get(key, default) if default is not None else _required(mdef, key, path)
    if not isinstance(value, int):
        raise CfgError(path, mdef.get("_line", 0), f"[{mdef.get('type', 'net')}] {key}={value!r} is not an integer")
    return value


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _source(index, current, mdef, path):
    """Absolute index of a layer referenced by route/shortcut (negative = relative to the current layer)."""
    if not isinstance(index, int):
        raise CfgError(path, mdef["_line"], f"[{mdef['type']}] layer reference {index!r} is not an integer")
    absolute = current + index if index < 0 else index
    if not 0 <= absolute < current:
        raise CfgError(path, mdef["_line"], f"[{mdef['type']}] references layer {index}, "
                                            f"which is not an earlier layer of layer {current}")
    return absolute
