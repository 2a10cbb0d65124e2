"""`shapes`: a generated detection dataset, written as JPEG files + COCO json so it is read exactly like COCO.

Filled and outlined shapes in random colours on textured, noisy backgrounds, sizes from small to large,
bounded overlaps, images of varying aspect. Every image has its own RNG stream derived from
(seed, split, index), so the files are a pure function of the parameters.
"""

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Bump when the rendering changes, so cached datasets of an older version are not reused.
VERSION = 2

CLASSES = (
    "circle", "square", "triangle", "star", "cross",
    "circle_outline", "square_outline", "triangle_outline",
)

# Defaults sized for yolov3-tiny to reach mAP@0.5 >= 0.5 within minutes of CPU training at 256 px.
DEFAULTS = {
    "n_train": 500,
    "n_val": 100,
    "img_size": 256,      # long side of each image in pixels
    "seed": 0,
    "min_objects": 1,
    "max_objects": 6,
    "min_size": 0.1,      # object extent as a fraction of the image's short side (log-uniform)
    "max_size": 0.45,
    "min_aspect": 0.75,   # short side / long side is drawn from [min_aspect, 1]
}

SPLITS = ("train", "val")
_MAX_IOU = 0.3            # overlaps allowed but bounded, so every object stays mostly visible
_MAX_COVER = 0.5          # at most this fraction of the smaller box may be overlapped
_MIN_CONTRAST = 90.0      # RGB distance between a shape and the background under it

log = logging.getLogger(__name__)


def params_hash(params):
    """Short stable hash of the generation parameters: names the cache folder."""
    blob = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:10]


def default_cache_root(cache_dir=None):
    """`cache_dir`, else `$SWISHKERNELS_CACHE`, else `~/.cache/swishkernels`."""
    root = cache_dir or os.environ.get("SWISHKERNELS_CACHE") or Path.home() / ".cache" / "swishkernels"
    return Path(root).expanduser()


def shapes_params(**overrides):
    """DEFAULTS with `overrides` applied and checked; unknown names are a ValueError listing the known ones."""
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown shapes parameter(s) {unknown}; known: {sorted(DEFAULTS)}")
    params = dict(DEFAULTS)
    for key, value in overrides.items():
        params[key] = type(DEFAULTS[key])(value)
    if params["n_train"] < 1 or params["n_val"] < 1:
        raise ValueError(f"shapes needs n_train >= 1 and n_val >= 1, got {params['n_train']}, {params['n_val']}")
    if params["img_size"] < 32:
        raise ValueError(f"shapes img_size must be >= 32, got {params['img_size']}")
    if not 1 <= params["min_objects"] <= params["max_objects"]:
        raise ValueError("shapes needs 1 <= min_objects <= max_objects")
    if not 0 < params["min_size"] <= params["max_size"] <= 0.9:
        raise ValueError("shapes needs 0 < min_size <= max_size <= 0.9")
    if not 0.25 <= params["min_aspect"] <= 1:
        raise ValueError("shapes needs 0.25 <= min_aspect <= 1")
    return params


def ensure_shapes(cache_dir=None, **overrides):
    """Return the folder of the shapes dataset with these parameters, generating it on first use."""
    params = shapes_params(**overrides)
    root = default_cache_root(cache_dir) / f"shapes-v{VERSION}-{params_hash(params)}"
    if not (root / "dataset.json").is_file():
        make_shapes_dataset(root, **params)
    return root


def split_paths(root, split):
    """(images dir, instances json) of one split of a generated dataset."""
    root = Path(root)
    return root / "images" / split, root / "annotations" / f"instances_{split}.json"


def make_shapes_dataset(root, n_train=DEFAULTS["n_train"], n_val=DEFAULTS["n_val"],
                        img_size=DEFAULTS["img_size"], seed=0, progress=True, **more):
    """Generate the dataset into `root` atomically and return `root` as a Path.

    Files are written into a temporary sibling folder that is renamed to `root` only when complete, so an
    interrupted run never leaves a half dataset. If `root` already holds a complete dataset (for example a
    concurrent DDP rank won the race) it is kept as is.
    """
    params = shapes_params(n_train=n_train, n_val=n_val, img_size=img_size, seed=seed, **more)
    root = Path(root)
    if (root / "dataset.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _write_dataset(tmp, params, progress)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "dataset.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)   # another process finished first: use its copy
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _write_dataset(out, params, progress):
    from tqdm import tqdm

    counts = {split: params[f"n_{split}"] for split in SPLITS}
    log.info("generating the shapes dataset (%s) in %s", counts, out)
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]
    # `delay`: the bar appears only if generation takes more than a moment.
    with tqdm(total=sum(counts.values()), desc="generating shapes", unit="img", delay=1.0,
              disable=not progress) as bar:
        for split_index, split in enumerate(SPLITS):
            img_dir, ann_file = split_paths(out, split)
            img_dir.mkdir(parents=True)
            images, annotations = [], []
            for i in range(counts[split]):
                rng = np.random.default_rng([params["seed"], split_index, i])
                image, objects = render_image(rng, params)
                image_id = i + 1
                name = f"{image_id:06d}.jpg"
                image.save(img_dir / name, quality=92)
                images.append({"id": image_id, "file_name": name, "width": image.width, "height": image.height})
                for cls, box, area in objects:
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                        "bbox": [float(v) for v in box], "area": float(area), "iscrowd": 0,
                    })
                bar.update()
            ann_file.parent.mkdir(parents=True, exist_ok=True)
            gt = {"info": {"description": f"shapes v{VERSION}", "params": params}, "licenses": [],
                  "images": images, "annotations": annotations, "categories": categories}
            ann_file.write_text(json.dumps(gt))
    # Written last: its presence marks a complete dataset.
    (out / "dataset.json").write_text(json.dumps({"version": VERSION, "params": params,
                                                  "names": list(CLASSES)}, indent=1))


def render_image(rng, params):
    """One image and its objects [(class index, [x, y, w, h] in pixels, mask area)]."""
    long_side = params["img_size"]
    short_side = int(round(long_side * rng.uniform(params["min_aspect"], 1.0)))
    w, h = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    pixels = np.array(_background(rng, w, h))   # writable copy: shapes are painted into it
    boxes, objects = [], []
    for _ in range(int(rng.integers(params["min_objects"], params["max_objects"] + 1))):
        cls = int(rng.integers(len(CLASSES)))
        for _attempt in range(20):
            placed = _try_place(rng, params, cls, w, h, boxes)
            if placed is not None:
                break
        else:
            continue
        x0, y0, mask, box = placed
        inside = np.asarray(mask) > 0
        region = pixels[y0:y0 + mask.height, x0:x0 + mask.width]
        region[inside] = _contrasting_colour(rng, region[inside].mean(axis=0))
        boxes.append(box)
        objects.append((cls, [box[0], box[1], box[2] - box[0], box[3] - box[1]], int(inside.sum())))
    return Image.fromarray(pixels), objects


def _try_place(rng, params, cls, w, h, boxes):
    """Draw class `cls` at a random size, angle and place; None if it overlaps the others too much."""
    short = min(w, h)
    size = math.exp(rng.uniform(math.log(params["min_size"]), math.log(params["max_size"]))) * short
    mask = _shape_mask(cls, size / 2, rng.uniform(0, 2 * math.pi))
    if mask.width >= w or mask.height >= h:
        return None
    x0 = int(rng.integers(0, w - mask.width + 1))
    y0 = int(rng.integers(0, h - mask.height + 1))
    left, top, right, bottom = mask.getbbox()     # the exact extent of the drawn pixels
    box = (x0 + left, y0 + top, x0 + right, y0 + bottom)
    for other in boxes:
        inter = _intersection(box, other)
        area_a, area_b = _area(box), _area(other)
        if inter / (area_a + area_b - inter) > _MAX_IOU or inter / min(area_a, area_b) > _MAX_COVER:
            return None
    return x0, y0, mask, box


def _shape_mask(cls, r, angle):
    """An 'L' mask (255 = shape) of class `cls` with circumradius `r`, rotated by `angle` radians."""
    size = 2 * int(math.ceil(r)) + 3
    c = (size - 1) / 2
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    name = CLASSES[cls]
    base = name.replace("_outline", "")
    outline = name.endswith("_outline")
    if base == "circle":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
        if outline:
            ri = 0.62 * r
            draw.ellipse([c - ri, c - ri, c + ri, c + ri], fill=0)
        return mask
    points = _polygon(base, angle)
    draw.polygon([(c + r * x, c + r * y) for x, y in points], fill=255)
    if outline:   # hollow: cut the same polygon scaled down about its centre
        k = 0.5 if base == "triangle" else 0.62
        draw.polygon([(c + k * r * x, c + k * r * y) for x, y in points], fill=0)
    return mask


def _polygon(base, angle):
    """Unit-circumradius vertices of a shape, rotated."""
    if base == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif base == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif base == "star":
        pts = [((1.0 if i % 2 == 0 else 0.45) * math.cos(a), (1.0 if i % 2 == 0 else 0.45) * math.sin(a))
               for i, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)]
    elif base == "cross":
        a = 0.32
        pts = [(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1),
               (-a, -1), (-a, -a), (-1, -a), (-1, a), (-a, a), (-a, 1)]
        pts = [(x / math.hypot(1, a), y / math.hypot(1, a)) for x, y in pts]
    else:
        raise ValueError(f"unknown shape {base!r}")
    cos, sin = math.cos(angle), math.sin(angle)
    return [(x * cos - y * sin, x * sin + y * cos) for x, y in pts]


def _background(rng, w, h):
    """A smooth random colour field with random faint lines and pixel noise."""
    base = rng.uniform(0, 255, 3)
    grid = np.clip(base + rng.uniform(-60, 60, (4, 4, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(grid).resize((w, h), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 8))):
        tint = tuple(int(v) for v in np.clip(base + rng.uniform(-40, 40, 3), 0, 255))
        xy = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(2)]
        draw.line(xy, fill=tint, width=int(rng.integers(1, 4)))
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(3, 12)
    noise += np.asarray(image, dtype=np.float32)
    return Image.fromarray(np.clip(noise, 0, 255, out=noise).astype(np.uint8))


def _contrasting_colour(rng, under):
    """A random colour at least _MIN_CONTRAST away from `under` (the mean background beneath the shape)."""
    for _ in range(50):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            return tuple(int(v) for v in colour)
    return tuple(int(v) for v in 255 - under)


def _intersection(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _area(box):
    return (box[2] - box[0]) * (box[3] - box[1])
