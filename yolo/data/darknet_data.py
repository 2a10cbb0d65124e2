"""Darknet `.data` files (the 2019 ultralytics/yolov3 and darknet layout), read into the same config as a YAML.

    classes=80
    train=../coco/trainvalno5k.txt      # a list file of image paths (or a folder of images)
    valid=../coco/5k.txt
    names=data/coco.names               # one class name a line
    backup=backup/                      # other keys (backup, eval, ...) are darknet's own and ignored

Labels are darknet's: `.../images/x.jpg` is labelled by `.../labels/x.txt` (YOLO txt lines). A relative path,
in the .data file or in a list file, is looked up in the current folder first (darknet's rule: the folder it
runs in), then beside the file that names it.
"""
import os
from pathlib import Path

from .errors import DataError, MissingDataError

SPLIT_KEYS = {"train": "train", "val": "valid"}   # our split name -> the darknet key


def looks_like_darknet(text: str) -> bool:
    """True if every non-blank, non-comment line is `key=value` (YAML would read the file as one string)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return bool(lines) and all("=" in line and ":" not in line.partition("=")[0] for line in lines)


def parse_options(text: str, path: Path) -> "dict[str, tuple[str, int]]":
    """`key=value` lines -> {key: (value, line number)}; DataError naming the line otherwise."""
    options = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise DataError(f"{path}: line {n}: expected key=value (a Darknet .data file), got {line!r}")
        options[key.strip()] = (value.strip(), n)
    return options


def find_path(value: str, key: str, path: Path, must_exist: bool = True) -> Path:
    """A path written in the .data file: absolute, else in the current folder, else beside the .data file."""
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, path.parent / p]
    for c in candidates:
        if c.exists():
            return c.resolve()
    if must_exist:
        where = " or ".join(str(c.parent) for c in candidates)
        raise MissingDataError(f"{path}: {key}={value}: not found (looked in {where})")
    return candidates[0].resolve()


def read_names(value: str, path: Path) -> "list[str]":
    names_file = find_path(value, "names", path)
    try:
        text = names_file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: names={value}: cannot read {names_file} ({getattr(e, 'strerror', None) or e})") \
            from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: names={value}: {names_file} holds no class names")
    return names


def read_darknet_data(text: str, path: "str | Path", splits: "tuple[str, ...]") -> dict:
    """The data config ({path, yaml, names, nc, train, val}) of a .data file's text; only `splits` must exist."""
    path = Path(path)
    options = parse_options(text, path)
    out = {"path": str(path.parent.resolve()), "yaml": str(path)}
    for split, key in SPLIT_KEYS.items():
        if key not in options:
            raise DataError(f"{path}: no '{key}=' line (the {split} image list); a Darknet .data file needs "
                            "train= and valid=")
        source = find_path(options[key][0], key, path, must_exist=split in splits)
        # list entries are relative to the folder we run in first, as darknet reads them
        out[split] = {"format": "yolo", "sources": [str(source)], "list_root": os.getcwd()}
    classes = options.get("classes", (None, 0))[0]
    if classes is not None and not (classes.isdigit() and int(classes) > 0):
        raise DataError(f"{path}: classes={classes} is not a positive integer")
    if "names" in options:
        names = read_names(options["names"][0], path)
        if classes is not None and int(classes) != len(names):
            raise DataError(f"{path}: classes={classes} but {options['names'][0]} names {len(names)} classes")
    elif classes is not None:
        names = [str(i) for i in range(int(classes))]  # darknet runs without names too: the indices
    else:
        raise DataError(f"{path}: neither names= (a file of class names) nor classes= is given")
    out.update(names=names, nc=len(names))
    return out
