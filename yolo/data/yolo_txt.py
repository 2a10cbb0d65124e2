"""Read images with YOLO txt labels (Ultralytics layout) into samples and a COCO ground truth built on the fly.

`.../images/x.jpg` is labelled by `.../labels/x.txt` (beside the image when the path has no `images`
folder); each line is `cls xc yc w h`, normalized to the image. A missing label file means no objects.
"""

import os
from pathlib import Path

import numpy as np

from .checks import IMAGE_SUFFIXES, Sample, box_tolerance, check_box, check_image, find_image_files
from .errors import DataError, MissingDataError


def image_files(sources, list_root=None):
    """Image paths from folders (searched recursively), list files (one path a line) or single images.

    A relative path in a list file is relative to the list file, or with `list_root` (Darknet .data files)
    to `list_root` first (darknet's rule: the folder it runs in), then to the list file."""
    files = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files += find_image_files(source)
        elif source.suffix.lower() in IMAGE_SUFFIXES:
            files.append(str(source))
        elif source.is_file():
            files += _list_file(source, list_root)
        else:
            raise MissingDataError(f"{source}: image folder or list file not found")
    return files


def _list_file(path, list_root=None):
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the image list ({getattr(e, 'strerror', None) or e})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        if not p.is_absolute():
            candidates = ([Path(list_root) / p] if list_root is not None else []) + [path.parent / p]
            p = Path(os.path.normpath(next((c for c in candidates if c.exists()), candidates[0])))
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{path}: line {n}: {line!r} is not an image path ({', '.join(IMAGE_SUFFIXES)})")
        out.append(str(p))
    return out


def label_path(image_path):
    """The label file of an image: the last `images` folder becomes `labels`, the suffix `.txt`."""
    head, sep, tail = image_path.rpartition(f"{os.sep}images{os.sep}")
    stem = f"{head}{os.sep}labels{os.sep}{tail}" if sep else image_path
    return os.path.splitext(stem)[0] + ".txt"


def read_labels(path, nc, w, h, bad=None):
    """(boxes (n, 4) x1 y1 x2 y2 pixels, classes (n,)) from one label file; DataError naming file and line.

    `bad` (a checks.BadSamples) decides about an invalid line (raise, or drop only that line) and hears of
    boxes of zero area, which are left out; without it an invalid line raises and such boxes drop silently."""
    boxes, classes = [], []
    if not os.path.isfile(path):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable label file ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            box, cls = _parse_line(line, f"{path}: line {n}", nc, w, h)
        except DataError as e:
            if bad is None:
                raise
            bad.line(e)
            continue
        if box is None:
            if bad is not None:
                bad.drop_box(f"{path}: line {n} {line.strip()!r}")
            continue
        boxes.append(box)
        classes.append(cls)
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def _parse_line(line, where, nc, w, h):
    """One 'cls xc yc w h' line -> (pixel box clipped to the image, or None if of zero area; class index).
    Errors quote the values as written in the file (normalized), not converted to pixels."""
    fields = line.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise DataError(f"{where}: expected numbers 'cls xc yc w h', got {line.strip()!r}") from None
    if len(values) != 5:
        raise DataError(f"{where}: expected 5 values 'cls xc yc w h', got {len(values)}")
    cls, xc, yc, bw, bh = values
    if not np.isfinite(cls) or cls != int(cls):
        raise DataError(f"{where}: class id {fields[0]} is not an integer")
    if not 0 <= cls < nc:
        raise DataError(f"{where}: class id {fields[0]} out of range [0, {nc - 1}]")
    written = f"'xc yc w h' = {' '.join(fields[1:])}"
    if not all(np.isfinite(v) for v in (xc, yc, bw, bh)):
        raise DataError(f"{where}: {written} is not finite")
    if bw < 0 or bh < 0:
        raise DataError(f"{where}: {written} has a negative width or height")
    x1, y1, x2, y2 = xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2
    try:
        box = check_box(x1 * w, y1 * h, x2 * w, y2 * h, w, h)
    except ValueError:
        tol = box_tolerance(w, h)
        raise DataError(f"{where}: {written} spans x {x1:.4g}..{x2:.4g}, y {y1:.4g}..{y2:.4g}, outside [0, 1] "
                        f"by more than {tol:.0f} px of the {w}x{h} image") from None
    return box, int(cls)


def read_yolo(sources, names, bad, decode=False, list_root=None):
    """-> (samples, category_ids, gt): image ids number the images 1.. in order, category ids are 1..nc."""
    samples = []
    for i, path in enumerate(image_files(sources, list_root)):
        try:
            h, w = check_image(path, decode=decode)
            boxes, classes = read_labels(label_path(path), len(names), w, h, bad)
            samples.append(Sample(path, i + 1, (h, w), boxes, classes))
        except DataError as e:
            bad(e)
    category_ids = list(range(1, len(names) + 1))
    return samples, category_ids, coco_gt_from_samples(samples, names, category_ids)


def coco_gt_from_samples(samples, names, category_ids):
    """A COCO ground-truth dict (bbox area as the object area) for samples that have no json of their own."""
    images, annotations = [], []
    for s in samples:
        images.append({"id": s.image_id, "file_name": s.path, "height": s.shape[0], "width": s.shape[1]})
        for (x1, y1, x2, y2), c in zip(s.boxes.tolist(), s.classes.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": s.image_id,
                                "category_id": category_ids[c], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    categories = [{"id": cid, "name": name} for cid, name in zip(category_ids, names)]
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": categories}
