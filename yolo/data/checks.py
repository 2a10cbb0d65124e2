"""Per-sample validation shared by the COCO and YOLO-txt readers: images, boxes, and skipping bad samples."""

import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError, MissingDataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Sample(NamedTuple):
    """One image and its boxes in original pixels (x1, y1, x2, y2) with contiguous class indices."""
    path: str
    image_id: int
    shape: tuple          # (h, w) of the original image
    boxes: np.ndarray     # (n, 4) float32
    classes: np.ndarray   # (n,) int64


def box_tolerance(w, h):
    """How far (pixels) a box may stick out of its image before it is an error rather than rounding."""
    return max(2.0, 0.01 * max(w, h))


def check_box(x1, y1, x2, y2, w, h):
    """Clip a pixel box to a w x h image; None if it is degenerate; ValueError if it lies outside.

    The ValueError message says what is wrong; the caller adds the file and line.
    """
    if not all(np.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"box {x1, y1, x2, y2} is not finite")
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box has negative width or height ({x2 - x1:.1f} x {y2 - y1:.1f} px)")
    tol = box_tolerance(w, h)
    if x1 < -tol or y1 < -tol or x2 > w + tol or y2 > h + tol:
        raise ValueError(f"box [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}] (x1 y1 x2 y2 px) lies outside the "
                         f"{w}x{h} image by more than {tol:.0f} px")
    x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
    y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    return x1, y1, x2, y2


def check_image(path, decode=False):
    """(h, w) of a readable image; DataError naming the file otherwise.

    Without `decode` this reads the header and runs PIL's cheap verify(); `decode` also decodes the
    pixels, which catches truncated files too (used where bad samples must be dropped up front).
    """
    try:
        with Image.open(path) as im:
            size = im.size
            if decode:
                im.load()
            else:
                im.verify()
    except FileNotFoundError:
        raise MissingDataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable or corrupt image ({e})") from None
    return size[1], size[0]


def load_image(path):
    """The image as an RGB uint8 (h, w, 3) array; DataError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise MissingDataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable or corrupt image ({e})") from None


class BadSamples:
    """Raise each bad-sample error, or with skip=True collect them and warn once with the count."""

    def __init__(self, skip):
        self.skip = skip
        self.messages = []

    def __call__(self, error):
        if not self.skip:
            raise error
        self.messages.append(str(error))

    def warn(self, total, source):
        if self.messages:
            warnings.warn(f"{source}: skipped {len(self.messages)} bad sample(s) of {total} "
                          f"(first: {self.messages[0]})", UserWarning, stacklevel=3)
