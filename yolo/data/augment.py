"""Letterbox resize and the Ultralytics-era augmentations (HSV, random affine, horizontal flip), boxes included.

Images are RGB uint8 (h, w, 3) numpy arrays; boxes are (n, 4) float pixel x1 y1 x2 y2 in the continuous
convention (pixel i covers [i, i + 1)), the one COCO and PIL's affine transform use.
"""

import math

import numpy as np
from PIL import Image

PAD_VALUE = 114


def letterbox(img, img_size, stride=None):
    """Resize keeping the aspect so the long side is `img_size`, then pad with grey to a square.

    With `stride` (rectangular batches) pad only up to the next multiple of `stride`. The image is
    centred; returns (image, ratio (rw, rh), pad (left, top)) with original -> letterboxed coordinates
    being `x * rw + left`, `y * rh + top`.
    """
    h, w = img.shape[:2]
    r = img_size / max(h, w)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    if (nw, nh) != (w, h):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    if stride:
        out_w, out_h = math.ceil(nw / stride) * stride, math.ceil(nh / stride) * stride
    else:
        out_w = out_h = img_size
    left, top = (out_w - nw) // 2, (out_h - nh) // 2
    out = np.full((out_h, out_w, 3), PAD_VALUE, np.uint8)
    out[top:top + nh, left:left + nw] = img
    return out, (nw / w, nh / h), (left, top)


def augment_hsv(img, rng, hgain, sgain, vgain):
    """Random hue/saturation/value gains in [1 - gain, 1 + gain] (hue wraps around)."""
    if not (hgain or sgain or vgain):
        return img
    r = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    x = np.arange(256, dtype=np.float32)
    luts = [((x * r[0]) % 256).astype(np.uint8),
            np.clip(x * r[1], 0, 255).astype(np.uint8),
            np.clip(x * r[2], 0, 255).astype(np.uint8)]
    hsv = Image.fromarray(img).convert("HSV").point(np.concatenate(luts).tolist())
    return np.asarray(hsv.convert("RGB"))


def affine_matrix(rng, w, h, degrees, translate, scale, shear):
    """3x3 matrix: rotate and scale about the centre, shear, then translate (fractions of the size)."""
    a = math.radians(rng.uniform(-degrees, degrees))
    s = rng.uniform(1 - scale, 1 + scale)
    centre = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]])
    rotate = np.array([[s * math.cos(a), -s * math.sin(a), 0], [s * math.sin(a), s * math.cos(a), 0], [0, 0, 1]])
    sx, sy = (math.tan(math.radians(rng.uniform(-shear, shear))) for _ in range(2))
    shear_m = np.array([[1, sx, 0], [sy, 1, 0], [0, 0, 1]])
    tx = rng.uniform(-translate, translate) * w + w / 2
    ty = rng.uniform(-translate, translate) * h + h / 2
    move = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    return move @ shear_m @ rotate @ centre, s


def warp_affine(img, m):
    """Apply the 3x3 affine `m` (input -> output coordinates) to an image, filling with grey."""
    inv = np.linalg.inv(m)   # PIL wants output -> input
    h, w = img.shape[:2]
    out = Image.fromarray(img).transform((w, h), Image.AFFINE, data=tuple(inv[:2].ravel()),
                                         resample=Image.BILINEAR, fillcolor=(PAD_VALUE,) * 3)
    return np.asarray(out)


def transform_boxes(boxes, m):
    """Boxes through affine `m`: the axis-aligned box around the four transformed corners."""
    if not len(boxes):
        return boxes.reshape(0, 4)
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1]), np.stack([x2, y1]), np.stack([x1, y2]), np.stack([x2, y2])])  # (4,2,n)
    xy = np.einsum("ij,kjn->kin", m[:2, :2], corners) + m[:2, 2, None]
    return np.stack([xy[:, 0].min(0), xy[:, 1].min(0), xy[:, 0].max(0), xy[:, 1].max(0)], axis=1)


def filter_boxes(before, after, w, h, area_scale=1.0, min_size=2.0, min_area_frac=0.2, max_aspect=20.0):
    """Clip `after` to the image and keep boxes still worth learning: mask of kept boxes and the clipped boxes.

    Drops boxes smaller than `min_size` px, those that lost most of their (scaled) area off the image, and
    slivers; `before` are the same boxes before the transform.
    """
    clipped = after.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    bw, bh = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area0 = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1]) * area_scale
    aspect = np.maximum(bw / (bh + 1e-9), bh / (bw + 1e-9))
    keep = (bw > min_size) & (bh > min_size) & (bw * bh > min_area_frac * area0) & (aspect < max_aspect)
    return keep, clipped


def random_affine(img, boxes, rng, degrees=0.0, translate=0.0, scale=0.0, shear=0.0):
    """Random rotation/scale/shear/translation of image and boxes; returns (img, boxes, kept mask)."""
    h, w = img.shape[:2]
    m, s = affine_matrix(rng, w, h, degrees, translate, scale, shear)
    if not np.allclose(m, np.eye(3)):
        img = warp_affine(img, m)
    keep, out = filter_boxes(boxes, transform_boxes(boxes, m), w, h, area_scale=s * s)
    return img, out[keep], keep


def fliplr(img, boxes):
    """Mirror left-right: x -> w - x."""
    w = img.shape[1]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    return np.ascontiguousarray(img[:, ::-1]), boxes


def augment(img, boxes, classes, rng, hyp):
    """HSV, affine and flip from `hyp` (keys hsv_h, hsv_s, hsv_v, degrees, translate, scale, shear, fliplr).

    `img` is already letterboxed, so the affine moves objects inside the padded square like Ultralytics.
    """
    img = augment_hsv(img, rng, hyp.get("hsv_h", 0), hyp.get("hsv_s", 0), hyp.get("hsv_v", 0))
    img, boxes, keep = random_affine(img, boxes, rng, hyp.get("degrees", 0), hyp.get("translate", 0),
                                     hyp.get("scale", 0), hyp.get("shear", 0))
    classes = classes[keep]
    if rng.random() < hyp.get("fliplr", 0):
        img, boxes = fliplr(img, boxes)
    return img, boxes, classes
