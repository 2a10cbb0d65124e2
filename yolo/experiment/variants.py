"""Variants: the named sets of trainer options an experiment compares, one summary row each.

A variant name is one of
  an activation of yolo.activations   leaky, swish, swish-me, swish-naive, silu, mish, prelu, prelu1, ...
  swish-fused                         our Swish with each BatchNorm fused into it (--fuse-bn)
  swish-fused-recompute               ... and the next layer recomputing its output (--fuse-bn-recompute)
  scale_xy=F                          box centre scale * sigmoid(t) - (scale - 1) / 2 (--scale-xy F)
  giou2                               squared GIoU box loss, ((1 - giou) ** 2).mean() (hyp giou_pow: 2)
  pan                                 the yolov3-spp-pan cfg (YOLOv3-SPP + a bottom-up PANet path)
  biasV                               objectness and class biases start at V, e.g. bias-5 (--head-bias V)
  adamLR, sgdLR                       that optimizer at initial lr LR, e.g. adam9e-5 (hyp lr0: LR)
or a group of them: `activations` (the default: the activation comparison) or `seed` (the seed thread's rows).
Options a variant does not set come from the experiment's own (--cfg, --optimizer, --hyp, ...).
"""
import re
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

BASELINE = "leaky"  # the seed thread's baseline: nn.LeakyReLU(0.1, inplace=True), the 2019 default

# The seed thread's rows (27 COCO epochs, mAP@0.5 at 320 px) and what each variant reproduces. Its row 11,
# "Adam uFBCE 8192" (45.4), is not defined anywhere in the thread, so it has no variant.
SEED_ROWS: Tuple[Tuple[str, str], ...] = (
    ("leaky", "row 1, nn.LeakyReLU(0.1, inplace=True), the old default: 44.6"),
    ("swish", "row 2, Swish(): 44.9"),
    ("prelu", "row 3, nn.PReLU(num_parameters=filters, init=0.10): 43.4"),
    ("prelu1", "first post, nn.PReLU(num_parameters=1)"),
    ("scale_xy=1.2", "row 4: 44.3"),
    ("scale_xy=1.1", "row 5: 44.0"),
    ("scale_xy=1.5", "row 6: 44.4"),
    ("giou2", "row 7, ((1.0 - giou) ** 2).mean(): 44.2"),
    ("pan", "row 8, yolov3-spp-pan.cfg: 44.4"),
    ("bias-5", "row 9, cls/obj biases initialized to -5: 44.9"),
    ("adam9e-5", "row 10, Adam 9E-5: 45.2"),
    ("swish-me", "second table, MemoryEfficientSwish()"),
    ("swish-fused", "ours: Swish with BatchNorm fused (LeakyReLU's memory)"),
    ("swish-fused-recompute", "ours: ... and the next layer recomputing the block output"),
)
SEED_LEFT_OUT = 'row 11 "Adam uFBCE 8192" (45.4) is not defined in the thread, so it is left out'

ACTIVATION_ROWS = ("leaky", "swish", "swish-me", "swish-naive", "silu", "mish", "prelu", "swish-fused",
                   "swish-fused-recompute")
GROUPS: Dict[str, Tuple[str, ...]] = {
    "activations": ACTIVATION_ROWS,
    "seed": tuple(name for name, _ in SEED_ROWS),
}
DEFAULT = "activations"

_FUSED = {"swish-fused": dict(activation="swish", fuse_bn=True),
          "swish-fused-recompute": dict(activation="swish", fuse_bn_recompute=True)}
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


@dataclass(frozen=True)
class Variant:
    """A row: `options` are trainer options (yolo.train.run keywords), `hyp` hyperparameter overrides."""
    name: str
    about: str
    options: Dict[str, object] = field(default_factory=dict)
    hyp: Dict[str, float] = field(default_factory=dict)

    def definition(self) -> dict:
        """What the row trains with (stored in its markers: a changed definition retrains the row)."""
        return {"options": dict(self.options), "hyp": dict(self.hyp)}


def variant(name: str) -> Variant:
    """The Variant a name stands for; ValueError naming the valid forms otherwise."""
    from yolo.activations import ACTIVATIONS

    if name in ACTIVATIONS:
        return Variant(name, f"--activation {name}", {"activation": name})
    if name in _FUSED:
        flags = " ".join(f"--{k.replace('_', '-')}" for k in _FUSED[name] if k != "activation")
        return Variant(name, f"--activation swish {flags}", dict(_FUSED[name]))
    if name == "giou2":
        return Variant(name, "hyp giou_pow: 2 (squared GIoU box loss)", hyp={"giou_pow": 2.0})
    if name == "pan":
        return Variant(name, "--cfg yolov3-spp-pan", {"cfg": "yolov3-spp-pan"})
    match = re.fullmatch(r"scale_xy=" + _NUMBER, name)
    if match:
        scale = _number(match.group(1), name, positive=True)
        return Variant(name, f"--scale-xy {scale:g}", {"scale_xy": scale})
    match = re.fullmatch(r"bias" + _NUMBER, name)
    if match:
        bias = _number(match.group(1), name)
        return Variant(name, f"--head-bias {bias:g}", {"head_bias": bias})
    match = re.fullmatch(r"(adam|sgd)" + _NUMBER, name)
    if match:
        lr0 = _number(match.group(2), name, positive=True)
        return Variant(name, f"--optimizer {match.group(1)}, hyp lr0: {lr0:g}", {"optimizer": match.group(1)},
                       {"lr0": lr0})
    raise ValueError(f"unknown variant {name!r}; valid: {', '.join(ACTIVATIONS)}, {', '.join(_FUSED)}, giou2, pan, "
                     f"scale_xy=F, biasV (bias-5), adamLR or sgdLR (adam9e-5), or a group ({', '.join(GROUPS)})")


def _number(text, name, positive=False):
    value = float(text)
    if positive and not value > 0:
        raise ValueError(f"variant {name!r}: the number must be > 0")
    return value


def parse_variants(spec: str) -> List[Variant]:
    """A comma list of variant names and groups -> Variants in order, each once; ValueError if empty or unknown."""
    names: List[str] = []
    for item in (s.strip() for s in spec.split(",")):
        for name in GROUPS.get(item, (item,) if item else ()):
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("no variant given")
    return [variant(name) for name in names]
