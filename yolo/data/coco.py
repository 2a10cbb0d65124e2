"""Read a COCO-format split (image folder + instances json) into samples with contiguous class indices."""

import json
from pathlib import Path

import numpy as np

from .checks import Sample, check_box, check_image
from .errors import DataError, MissingDataError


def read_json(path):
    """A json file as a dict; DataError naming the file if it is missing or malformed."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise MissingDataError(f"{path}: annotations file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a COCO annotations (.json) file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the annotations file ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid json ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO json object, got {type(data).__name__}")
    return data


def category_mapping(categories, names, ann_file):
    """{category_id: class index} and the inverse list; by name where the json names match `names`.

    COCO's 80 classes have ids 1..90 with gaps, so ids never index arrays directly.
    """
    cats = sorted(categories, key=lambda c: c["id"])
    if len(cats) > len(names):
        raise DataError(f"{ann_file}: {len(cats)} categories but the data config names only {len(names)} classes")
    if all(c.get("name") in names for c in cats):
        to_index = {c["id"]: names.index(c["name"]) for c in cats}
    else:
        to_index = {c["id"]: i for i, c in enumerate(cats)}
    category_ids = [None] * len(names)
    for cid, i in to_index.items():
        category_ids[i] = cid
    # Classes the json lacks still need an id for results: take unused ones above the largest.
    spare = max(to_index, default=0) + 1
    for i, cid in enumerate(category_ids):
        if cid is None:
            category_ids[i], spare = spare, spare + 1
    return to_index, category_ids


def read_coco(images_dir, ann_file, names, bad, decode=False):
    """-> (samples, category_ids, gt) where gt is the json filtered to the kept images.

    `bad(error)` is called for each bad image (missing, unreadable, bad annotation); it raises or records.
    Crowd annotations stay in gt (COCOeval ignores them) but are not training targets.
    """
    gt = read_json(ann_file)
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise DataError(f"{ann_file}: missing the '{key}' list of a COCO instances file")
    to_index, category_ids = category_mapping(gt["categories"], names, ann_file)
    by_image = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    known = {img.get("id") for img in gt["images"]}
    orphans = [ann.get("id") for ann in gt["annotations"] if ann.get("image_id") not in known]
    if orphans:
        raise DataError(f"{ann_file}: annotation(s) {orphans[:5]} refer to image ids not in 'images'")

    samples, dropped = [], set()
    for img in gt["images"]:
        path = Path(images_dir) / str(img.get("file_name", ""))
        try:
            sample, zero_area = _sample(img, path, by_image.get(img["id"], []), to_index, ann_file, decode)
        except DataError as e:
            bad(e)
            continue
        samples.append(sample)
        for ann in zero_area:  # one ground truth: a box that is no training target is no evaluation target
            dropped.add(id(ann))
            bad.drop_box(f"{ann_file}: annotation {ann.get('id')} (image {path.name}) bbox {ann.get('bbox')}")
    kept = {s.image_id for s in samples}
    gt = dict(gt, images=[i for i in gt["images"] if i["id"] in kept],
              annotations=[a for a in gt["annotations"] if a["image_id"] in kept and id(a) not in dropped])
    return samples, category_ids, gt


def _sample(img, path, anns, to_index, ann_file, decode):
    """-> (Sample, annotations whose box has zero area once clipped to the image)."""
    h, w = check_image(path, decode=decode)
    if (img.get("height"), img.get("width")) != (h, w):
        raise DataError(f"{path}: image is {w}x{h} but {ann_file} says {img.get('width')}x{img.get('height')}")
    boxes, classes, zero_area = [], [], []
    for ann in anns:
        where = f"{ann_file}: annotation {ann.get('id')} (image {path.name})"
        if ann.get("category_id") not in to_index:
            raise DataError(f"{where}: category_id {ann.get('category_id')} is not in 'categories'")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise DataError(f"{where}: bbox must be [x, y, w, h] numbers, got {bbox!r}")
        if ann.get("iscrowd", 0):
            continue
        x, y, bw, bh = (float(v) for v in bbox)
        try:
            box = check_box(x, y, x + bw, y + bh, w, h)
        except ValueError as e:
            raise DataError(f"{where}: {e}") from None
        if box is None:
            zero_area.append(ann)
            continue
        boxes.append(box)
        classes.append(to_index[ann["category_id"]])
    return Sample(str(path), int(img["id"]), (h, w), np.array(boxes, np.float32).reshape(-1, 4),
                  np.array(classes, np.int64)), zero_area
