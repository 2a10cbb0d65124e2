"""The torch Dataset: samples from a COCO or YOLO-txt split -> letterboxed (augmented) images and labels."""

import numpy as np
import torch

from .augment import augment, letterbox
from .checks import BadSamples, load_image
from .coco import read_coco
from .config import normalize_split
from .errors import DataError
from .yolo_txt import read_yolo

RECT_STRIDE = 32   # rectangular images are padded to multiples of the network's largest stride


class DetectionDataset(torch.utils.data.Dataset):
    """Items are (img uint8 (3, H, W), labels (n, 5) [cls, xc, yc, w, h] normalized to img, meta dict).

    meta: image_id, path, orig_shape (h, w), ratio (rw, rh), pad (left, top); letterboxed = orig * ratio + pad.
    """

    def __init__(self, samples, names, category_ids, gt, img_size, augment=False, hyp=None, rect=False):
        self.samples = samples
        self.names = list(names)
        self.category_ids = list(category_ids)
        self._gt = gt
        self.img_size = int(img_size)
        self.augment = augment
        self.hyp = dict(hyp or {})
        self.rect = rect

    def __len__(self):
        return len(self.samples)

    def coco_gt(self):
        """COCO ground truth (images, annotations, categories) of exactly the images in this dataset."""
        return self._gt

    def __getitem__(self, index):
        s = self.samples[index]
        img = load_image(s.path)
        if img.shape[:2] != s.shape:
            raise DataError(f"{s.path}: image is {img.shape[1]}x{img.shape[0]} now but was "
                            f"{s.shape[1]}x{s.shape[0]} when the dataset was built")
        img, ratio, pad = letterbox(img, self.img_size, RECT_STRIDE if self.rect else None)
        boxes = s.boxes * np.array([ratio[0], ratio[1], ratio[0], ratio[1]], np.float32) + \
            np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)
        classes = s.classes
        if self.augment:
            # Drawn from torch's RNG, which the DataLoader seeds per worker and per epoch.
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
            img, boxes, classes = augment(img, boxes, classes, rng, self.hyp)
        labels = _normalized_labels(boxes, classes, img.shape[1], img.shape[0])
        meta = {"image_id": s.image_id, "path": s.path, "orig_shape": s.shape, "ratio": ratio, "pad": pad}
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), labels, meta


def _normalized_labels(boxes, classes, w, h):
    """(n, 5) float32 tensor [cls, xc, yc, w, h] normalized by the image size."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    xc, yc = (boxes[:, 0] + boxes[:, 2]) / (2 * w), (boxes[:, 1] + boxes[:, 3]) / (2 * h)
    bw, bh = (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h
    return torch.from_numpy(np.stack([np.asarray(classes, np.float32), xc, yc, bw, bh], axis=1))


def create_dataset(split, names, img_size, augment, hyp, skip_bad=False, rect=False, decode=None):
    """A DetectionDataset from a split spec (as from `load_data_config`, or a raw folder/list/COCO dict).

    Labels are read and checked and images verified here, so bad input fails before training starts.
    With `skip_bad` bad samples (and bad label lines) are dropped with one warning giving the count;
    otherwise the first one raises a DataError naming the file. `decode` (default: skip_bad) decodes every
    image in full, which also finds truncated files (the header check does not); the trainer decodes the
    val split so a bad val image fails before the first epoch, not at its end.
    """
    decode = skip_bad if decode is None else decode
    spec = normalize_split(split)
    bad = BadSamples(skip_bad)
    if spec["format"] == "coco":
        source = spec["annotations"]
        samples, category_ids, gt = read_coco(spec["images"], spec["annotations"], names, bad, decode=decode)
    else:
        source = ", ".join(spec["sources"])
        samples, category_ids, gt = read_yolo(spec["sources"], names, bad, decode=decode,
                                              list_root=spec.get("list_root"))
    bad.warn(len(samples) + len(bad.messages), source)
    if not samples:
        raise DataError(f"{source}: no usable images")
    if augment and hyp is None:
        from yolo.hyp import DEFAULT_HYP
        hyp = DEFAULT_HYP
    return DetectionDataset(samples, names, category_ids, gt, img_size, augment=augment, hyp=hyp, rect=rect)
