"""`--data`: the built-in name `shapes[:k=v,...]` or a small YAML naming the splits and classes.

YAML layout (Ultralytics-like)::

    path: ../datasets/coco        # optional root; relative paths below resolve against it, else the YAML's folder
    train: {images: images/train2017, annotations: annotations/instances_train2017.json}   # COCO format
    val: images/val               # or a folder / list file (or a list of them) of images with YOLO txt labels
    names: [person, bicycle, ...] # or {0: person, 1: bicycle}; optional for COCO splits (read from the json)

or `shapes: {n_train: 200, img_size: 128}` for a generated dataset with those parameters, or a Darknet
`.data` file (classes=, train=, valid=, names=; see darknet_data.py).

Only the splits a command uses must exist on disk (`splits`: train and val for the trainer, the scored one
for yolo.val), so an Ultralytics coco.yaml whose `test:` split was never downloaded still loads.

A split spec, as returned, is `{"format": "coco", "images": dir, "annotations": json}` or
`{"format": "yolo", "sources": [folder or list file, ...]}` with absolute paths.
"""

from pathlib import Path

import yaml

from .darknet_data import looks_like_darknet, read_darknet_data
from .errors import DataError, MissingDataError
from .shapes import CLASSES, ensure_shapes, split_paths

SHAPES = "shapes"


def load_data_config(data, cache_dir=None, splits=("train", "val")):
    """Resolve `data` to {names, nc, train, val[, test], path}; a missing path of one of `splits` ->
    MissingDataError (a FileNotFoundError), other bad input -> DataError or ValueError naming the file."""
    text = str(data)
    if text == SHAPES or text.startswith(SHAPES + ":"):
        return shapes_config(cache_dir, **parse_overrides(text[len(SHAPES) + 1:]))
    path = Path(text).expanduser()
    if path.is_dir():
        raise DataError(f"data config {path} is a folder; give a YAML or Darknet .data file, or 'shapes'")
    if not path.is_file():
        raise MissingDataError(f"data config not found: {path} (give a YAML or Darknet .data file, or the "
                               "built-in name 'shapes')")
    try:
        content = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the data config ({getattr(e, 'strerror', None) or e})") from None
    if path.suffix == ".data" or looks_like_darknet(content):
        return read_darknet_data(content, path, splits)
    try:
        cfg = yaml.safe_load(content)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping with train, val and names, got {type(cfg).__name__}")
    if SHAPES in cfg:
        overrides = cfg[SHAPES] or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"{path}: 'shapes' must be a mapping of generation parameters")
        return shapes_config(cache_dir, **overrides)

    base = path.parent
    if cfg.get("path"):
        base = base / Path(str(cfg["path"])).expanduser()
        if not base.is_dir():
            raise MissingDataError(f"{path}: dataset root 'path' not found: {base}")
    out = {"path": str(base.resolve()), "yaml": str(path)}
    for key in ("train", "val", "test"):
        if cfg.get(key) is not None:
            out[key] = normalize_split(cfg[key], base, where=f"{path}: {key}", check=key in splits)
        elif key != "test":
            raise ValueError(f"{path}: missing required key '{key}'")
    coco_splits = [out[k] for k in splits if k in out and out[k]["format"] == "coco"]
    names = _names(cfg, path, coco_splits[0] if coco_splits else out["train"])
    out.update(names=names, nc=len(names))
    return out


def shapes_config(cache_dir=None, **overrides):
    """The config of the generated shapes dataset (generated into the cache on first use)."""
    root = ensure_shapes(cache_dir, **overrides)
    out = {"path": str(root), "yaml": None, "names": list(CLASSES), "nc": len(CLASSES)}
    for split in ("train", "val"):
        images, annotations = split_paths(root, split)
        out[split] = {"format": "coco", "images": str(images), "annotations": str(annotations)}
    return out


def parse_overrides(text):
    """'n_train=200,img_size=128' -> {'n_train': '200', 'img_size': '128'} (typed later by shapes_params)."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"bad shapes override {item!r}: expected key=value, "
                             "e.g. 'shapes:n_train=200,img_size=128'")
        out[key.strip()] = value.strip()
    return out


def normalize_split(split, base=None, where="split", check=True):
    """A split as given in a YAML (or already normalized) -> the absolute split spec; with `check` its paths
    must exist (MissingDataError naming them)."""
    base = Path(base) if base is not None else Path.cwd()

    def resolve(p, what):
        full = (base / Path(str(p)).expanduser()).resolve()
        if check and not full.exists():
            raise MissingDataError(f"{where}: {what} not found: {full}")
        return str(full)

    if isinstance(split, dict) and split.get("format") == "yolo":
        out = {"format": "yolo", "sources": [resolve(p, "images") for p in split["sources"]]}
        if split.get("list_root"):  # a Darknet .data split: list entries relative to this folder first
            out["list_root"] = split["list_root"]
        return out
    if isinstance(split, dict) and "annotations" in split:
        if "images" not in split:
            raise ValueError(f"{where}: a COCO split needs both 'images' and 'annotations'")
        return {"format": "coco", "images": resolve(split["images"], "image folder"),
                "annotations": resolve(split["annotations"], "annotations file")}
    if isinstance(split, dict) and "images" in split:
        split = split["images"]
    if isinstance(split, (str, Path)):
        split = [split]
    if isinstance(split, (list, tuple)) and split and all(isinstance(p, (str, Path)) for p in split):
        return {"format": "yolo", "sources": [resolve(p, "images") for p in split]}
    raise ValueError(f"{where}: expected a folder, a list file, a list of them, or {{images, annotations}}; "
                     f"got {split!r}")


def _names(cfg, path, train):
    names = cfg.get("names")
    if names is None:
        if train["format"] != "coco":
            raise ValueError(f"{path}: 'names' (the class names) is required for YOLO txt labels")
        names = coco_category_names(train["annotations"])
    elif isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{path}: 'names' keys must be the class indices 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path}: 'names' must be a non-empty list of class names")
    names = [str(n) for n in names]
    if cfg.get("nc") is not None and int(cfg["nc"]) != len(names):
        raise ValueError(f"{path}: nc={cfg['nc']} but {len(names)} names are given")
    return names


def coco_category_names(annotations):
    """Class names from a COCO json's categories, in order of category id."""
    from .coco import read_json

    cats = read_json(annotations).get("categories") or []
    if not cats:
        raise DataError(f"{annotations}: no 'categories' to take class names from")
    return [str(c["name"]) for c in sorted(cats, key=lambda c: c["id"])]


__all__ = ["load_data_config", "shapes_config", "normalize_split", "parse_overrides", "coco_category_names"]
