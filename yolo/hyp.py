"""Training hyperparameters: the Ultralytics-era defaults (ultralytics/yolov3 train.py, 2020) in one place.

The loss gains (giou, cls, obj) go with `yolo.loss.compute_loss`, which scales the loss as that code did
(mean reductions, x batch_size / 64): change one and the others need retuning.
"""
from pathlib import Path

import yaml

DEFAULT_HYP = {
    "giou": 3.54,  # GIoU box loss gain
    "giou_pow": 1.0,  # box loss (1 - GIoU) ** giou_pow (the seed thread's row 7 squares it: 2)
    "cls": 37.4,  # class BCE loss gain
    "cls_pw": 1.0,  # class BCE positive weight
    "obj": 64.3,  # objectness BCE loss gain
    "obj_pw": 1.0,  # objectness BCE positive weight
    "iou_t": 0.20,  # anchor-target width/height IoU threshold for assignment
    "lr0": 0.01,  # initial learning rate (SGD)
    "lrf": 0.0005,  # final learning rate factor of the cosine schedule
    "momentum": 0.937,  # SGD momentum (Adam beta1)
    "weight_decay": 0.0005,  # optimizer weight decay (conv weights only)
    "fl_gamma": 0.0,  # focal loss gamma (0 = plain BCE)
    "hsv_h": 0.0138,  # HSV hue augmentation (fraction)
    "hsv_s": 0.678,  # HSV saturation augmentation (fraction)
    "hsv_v": 0.36,  # HSV value augmentation (fraction)
    "degrees": 1.98,  # rotation (+/- degrees)
    "translate": 0.05,  # translation (+/- fraction)
    "scale": 0.05,  # scale (+/- gain)
    "shear": 0.641,  # shear (+/- degrees)
    "fliplr": 0.5,  # horizontal flip probability
    "warmup_epochs": 3.0,  # learning-rate and momentum warmup
}

# Valid ranges: (low, high, low included, high included). Outside them a value is a mistake, not a choice:
# iou_t > 1 assigns no target at all (box and class losses stay 0), scale >= 1 can shrink images to nothing,
# a probability above 1 is not one.
INF = float("inf")
RANGES = {
    "giou": (0, INF, True, False), "giou_pow": (1, INF, True, False), "cls": (0, INF, True, False),
    "obj": (0, INF, True, False),
    "cls_pw": (0, INF, False, False), "obj_pw": (0, INF, False, False),
    "iou_t": (0, 1, False, True),
    "lr0": (0, INF, False, False), "lrf": (0, 1, False, True),
    "momentum": (0, 1, True, False), "weight_decay": (0, INF, True, False), "fl_gamma": (0, INF, True, False),
    "hsv_h": (0, 1, True, True), "hsv_s": (0, 1, True, True), "hsv_v": (0, 1, True, True),
    "degrees": (0, 180, True, True), "translate": (0, 1, True, True), "scale": (0, 1, True, False),
    "shear": (0, 90, True, False), "fliplr": (0, 1, True, True), "warmup_epochs": (0, INF, True, False),
}


def range_text(key):
    low, high, low_in, high_in = RANGES[key]
    return f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def check_hyp_value(key, value):
    """None if `value` is valid for `key`, else the reason (e.g. "must be in (0, 1], got 5.0")."""
    low, high, low_in, high_in = RANGES[key]
    ok = value == value and (low <= value if low_in else low < value) and (value <= high if high_in else value < high)
    return None if ok else f"must be in {range_text(key)}, got {value!r}"


def load_hyp(path=None):
    """A fresh hyperparameter dict: DEFAULT_HYP, with the values of the YAML file at `path` (if any) on top.

    Unknown keys and non-numeric values are errors naming the file, so a typo cannot silently do nothing.
    """
    hyp = dict(DEFAULT_HYP)
    if path is None:
        return hyp
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hyperparameter file not found: {path}")
    try:
        with open(path) as f:
            overrides = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the hyperparameter file ({getattr(e, 'strerror', None) or e})") \
            from None
    if not isinstance(overrides, dict):
        raise ValueError(f"{path}: expected a mapping of hyperparameter: value, got {type(overrides).__name__}")
    unknown = sorted(set(overrides) - set(DEFAULT_HYP))
    if unknown:
        raise ValueError(f"{path}: unknown hyperparameter(s) {', '.join(map(str, unknown))}; "
                         f"valid: {', '.join(DEFAULT_HYP)}")
    for key, value in overrides.items():
        value = _number(value)
        if value is None:
            raise ValueError(f"{path}: hyperparameter {key!r} must be a number, got {overrides[key]!r}")
        problem = check_hyp_value(key, float(value))
        if problem:
            raise ValueError(f"{path}: hyperparameter {key!r} {problem}")
        hyp[key] = float(value)
    return hyp


def _number(value):
    """A YAML value as a number, or None. PyYAML (YAML 1.1) reads `1e-3` and `5e4` as strings (it wants a dot:
    `1.0e-3`), so a string that Python reads as a number is one here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None
