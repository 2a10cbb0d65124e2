"""Per-sample validation shared by the COCO and YOLO-txt readers: images, boxes, and skipping bad samples."""

import os
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError, MissingDataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
EXIF_ORIENTATION = 0x0112       # 1 = as stored; 5..8 turn the image by 90 degrees (width and height swap)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")   # "I": 32-bit ints, accepted holding 0..65535


def find_image_files(folder: "str | os.PathLike") -> "list[str]":
    """Image files under `folder` (sub-folders included), sorted; a sub-folder that cannot be listed is a
    DataError naming it (Path.rglob would skip it without a word, and its images with it)."""
    def refuse(error):
        raise DataError(f"{error.filename}: cannot read this folder ({error.strerror}); fix its permissions "
                        "or move it out of the data")

    found = []
    for folder_path, _, names in os.walk(folder, onerror=refuse, followlinks=True):
        found += [os.path.join(folder_path, n) for n in names if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
    return sorted(found)


def exif_orientation(im: Image.Image, decoded: bool = False) -> int:
    """The EXIF orientation tag (1..8) of an open image, 1 if it has none. A PNG not yet decoded is searched
    for its eXIf chunk by skipping from chunk to chunk (Pillow would decode the image to find one after IDAT)."""
    try:
        if im.format == "PNG" and not decoded:
            raw = im.info.get("exif") or _png_exif_chunk(im.filename)
            exif = Image.Exif()
            if raw:
                exif.load(raw)
        else:
            exif = im.getexif()
        value = exif.get(EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: Pillow's exif_transpose ignores it too, and so do we
        return 1
    return value if value in range(1, 9) else 1


def _png_exif_chunk(path):
    """The data of a PNG file's eXIf chunk, or None; reads only the 8-byte chunk headers."""
    with open(path, "rb") as f:
        f.seek(8)  # the PNG signature
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"eXIf":
                return f.read(length)
            if kind == b"IEND":
                return None
            f.seek(length + 4, 1)  # data and CRC


def displayed_size(im: Image.Image, decoded: bool = False) -> "tuple[int, int]":
    """(w, h) as the image is shown: its EXIF orientation applied (labels are drawn on that frame)."""
    w, h = im.size
    return (h, w) if exif_orientation(im, decoded) >= 5 else (w, h)


def to_rgb(im: Image.Image, path: "str | os.PathLike") -> np.ndarray:
    """An open image as the RGB uint8 array it displays as: EXIF orientation applied; 16-bit grey (depth,
    thermal, medical) scaled 0..65535 -> 0..255 rather than clipped at 255; float images refused."""
    im.load()  # before reading the orientation: a PNG may keep its EXIF after the pixels
    if exif_orientation(im, decoded=True) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"{path}: 32-bit integer image with values {values.min()}..{values.max()}, outside "
                            "the 16-bit range 0..65535; convert it to 8 or 16 bits per channel")
        grey = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # rounded
        return np.repeat(grey[..., None], 3, axis=2)
    _refuse_float(im, path)
    return np.asarray(im.convert("RGB"))


def _refuse_float(im, path):
    if im.mode == "F" or im.mode.startswith("F;"):
        raise DataError(f"{path}: floating-point image (mode {im.mode}) has no defined 0..255 scale; "
                        "convert it to 8 or 16 bits per channel")


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
    """(h, w) of a readable image as displayed (EXIF orientation applied); DataError naming the file otherwise.

    Without `decode` this reads the header and runs PIL's cheap verify(); `decode` also decodes the
    pixels, which catches truncated files too (used where bad samples must be dropped up front).
    """
    _check_not_empty(path)
    try:
        with Image.open(path) as im:
            _refuse_float(im, path)
            if decode:
                to_rgb(im, path)
            else:
                im.verify()  # must come first after open (PNG)
            size = displayed_size(im, decoded=decode)
    except DataError:
        raise
    except FileNotFoundError:
        raise MissingDataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable or corrupt image ({e})") from None
    return size[1], size[0]


def _check_not_empty(path):
    """A zero-byte file (an interrupted copy) is named as such, not as an unknown image format."""
    try:
        empty = os.path.getsize(path) == 0
    except OSError:
        return  # missing: Image.open reports it
    if empty:
        raise DataError(f"{path}: empty image file (0 bytes)")


def load_image(path):
    """The image as displayed, an RGB uint8 (h, w, 3) array (see to_rgb); DataError naming the file if it
    cannot be decoded."""
    _check_not_empty(path)
    try:
        with Image.open(path) as im:
            return to_rgb(im, path)
    except DataError:
        raise
    except FileNotFoundError:
        raise MissingDataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable or corrupt image ({e})") from None


class BadSamples:
    """What a reader found wrong, reported once per source.

    Bad samples (unreadable image, invalid annotation) and bad label lines raise, or with skip=True are
    collected (a bad line drops only that line's box, the image stays). Boxes of zero area after clipping
    are never a training target nor ground truth; they are always collected and reported, never silent."""

    def __init__(self, skip):
        self.skip = skip
        self.messages = []   # skipped samples
        self.lines = []      # skipped label lines (their image kept)
        self.dropped = []    # zero-area boxes left out of targets and ground truth

    def __call__(self, error):
        if not self.skip:
            raise error
        self.messages.append(str(error))

    def line(self, error):
        if not self.skip:
            raise error
        self.lines.append(str(error))

    def drop_box(self, message):
        self.dropped.append(message)

    def warn(self, total, source):
        parts = []
        if self.messages:
            parts.append(f"skipped {len(self.messages)} bad sample(s) of {total} (first: {self.messages[0]})")
        if self.lines:
            parts.append(f"skipped {len(self.lines)} bad label line(s), keeping their images (first: {self.lines[0]})")
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} box(es) of zero area from the targets and the ground "
                         f"truth ({'; '.join(self.dropped[:3])}{'; ...' if len(self.dropped) > 3 else ''})")
        if parts:
            warnings.warn(f"{source}: " + "; ".join(parts), UserWarning, stacklevel=3)
