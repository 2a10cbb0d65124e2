"""Datasets for the trainer: the generated `shapes` set, COCO json and YOLO txt labels, augmentation, loaders.

    cfg = load_data_config("shapes")            # or a YAML path; {names, nc, train, val}
    loader, dataset = create_dataloader(cfg["train"], cfg["names"], 256, 16, augment=True, hyp=None)
"""

from .config import load_data_config
from .dataset import DetectionDataset, create_dataset
from .errors import DataError, MissingDataError
from .loader import collate, create_dataloader
from .shapes import CLASSES as SHAPES_CLASSES
from .shapes import DEFAULTS as SHAPES_DEFAULTS
from .shapes import make_shapes_dataset

__all__ = [
    "load_data_config", "create_dataset", "create_dataloader", "collate", "DetectionDataset",
    "DataError", "MissingDataError", "make_shapes_dataset", "SHAPES_CLASSES", "SHAPES_DEFAULTS",
]
