"""Run a detector on images: `python -m yolo.detect --weights best.pt --source images/` (a folder, one image
or a glob such as 'photos/*.jpg').

Writes to runs/detect/exp{,2,...} (--project/--name, like the trainer): each image with its boxes and labels
drawn (as <stem>.jpg, sub-folders of the source kept; images that differ only in extension keep it: a.png ->
a.png.jpg), and per image a labels/<stem>.txt (YOLO txt: `cls xc yc w h conf`, normalized to the original image)
or with --save-format json a labels/<stem>.json ([{class, name, confidence, box: [x1, y1, x2, y2] pixels}]).
Boxes are in the original image's pixels: the letterbox is undone.
"""
import argparse
import glob
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

PROG = "python -m yolo.detect"


class DetectError(ValueError):
    """A bad option or input; printed on one line, exit status 2."""


def build_parser():
    from yolo.train_args import OneLineParser

    p = OneLineParser(prog=PROG, description="Detect objects in images with YOLOv3 weights.")
    p.add_argument("--weights", required=True, help="last.pt, best.pt, a state_dict .pt or Darknet .weights")
    p.add_argument("--source", required=True, help="an image, a folder of images, a glob ('imgs/*.jpg') or "
                   "'shapes[:k=v,..]' (the generated val images)")
    p.add_argument("--cfg", help="model cfg, for a state_dict or .weights [from the checkpoint]")
    p.add_argument("--names", help="comma list of class names, for weights that do not record them")
    p.add_argument("--img-size", type=int, help="letterbox size, a multiple of 32 [the checkpoint's, else 416]")
    p.add_argument("--conf-thres", type=float, default=0.25, help="[0.25]")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold [0.45]")
    p.add_argument("--max-det", type=int, default=300, help="[300]")
    p.add_argument("--classes", type=int, nargs="+", help="keep only these class indices")
    p.add_argument("--save-format", choices=["txt", "json"], default="txt", help="predictions per image [txt]")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or N [cuda if available]")
    p.add_argument("--cache-dir", help="folder of generated datasets, for --source shapes [~/.cache/swishkernels]")
    p.add_argument("--project", default="runs/detect", help="results go to project/name [runs/detect]")
    p.add_argument("--name", default="exp", help="[exp], incremented (exp2, ...) unless --exist-ok")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=True)
    return p


def find_images(source, cache_dir=None):
    """Image paths of a file, a folder (recursive), a glob pattern or the val split of the generated
    'shapes[:k=v,..]' data (in cache_dir), sorted; DetectError if none."""
    from yolo.data.checks import IMAGE_SUFFIXES, find_image_files

    if str(source) == "shapes" or str(source).startswith("shapes:"):
        from yolo.data import DataError, load_data_config

        try:
            source = load_data_config(source, cache_dir=cache_dir)["val"]["images"]
        except (DataError, ValueError) as e:
            raise DetectError(f"--source {source}: {e}") from None
    path = Path(source)
    if path.is_dir():
        files = [Path(p) for p in find_image_files(path)]  # an unreadable sub-folder is an error, not skipped
    elif path.is_file():
        files = [path]
    elif any(c in str(source) for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(source), recursive=True)
                       if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise DetectError(f"--source {source}: no such file or folder")
    if not files:
        raise DetectError(f"--source {source}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


@torch.no_grad()
def detect_image(model, img, img_size, conf_thres=0.25, iou_thres=0.45, max_det=300, classes=None, device="cpu"):
    """One RGB uint8 (h, w, 3) image -> (n, 6) [x1, y1, x2, y2, conf, cls] in its own pixels."""
    from yolo.boxes import non_max_suppression, scale_coords
    from yolo.data.augment import letterbox

    boxed, ratio, pad = letterbox(img, img_size)
    x = torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1))).to(device).float().div_(255)[None]
    pred = model(x)
    det = non_max_suppression(pred.float(), conf_thres, iou_thres, max_det, classes=classes)[0].cpu()
    if len(det):
        det[:, :4] = scale_coords(boxed.shape[:2], det[:, :4], img.shape[:2], (ratio, pad))
    return det


def write_predictions(det, shape, names, path, fmt):
    """labels/<stem>.txt (cls xc yc w h conf, normalized) or .json (pixel boxes, names)."""
    h, w = shape
    if fmt == "json":
        items = [{"class": int(c), "name": names[int(c)] if names else str(int(c)), "confidence": round(s, 5),
                  "box": [round(v, 2) for v in box]} for *box, s, c in det.tolist()]
        out = path.with_name(path.name + ".json")  # appended: the stem may hold a dot (a.png)
        out.write_text(json.dumps(items, indent=1))
        return out
    lines = [f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f} {s:.5f}"
             for x1, y1, x2, y2, s, c in det.tolist()]
    out = path.with_name(path.name + ".txt")
    out.write_text("".join(line + "\n" for line in lines))
    return out


def draw(img, det, names, path):
    from yolo.utils.plots import draw_mosaic

    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None] / 255
    boxes = [torch.cat([det[:, :4], det[:, 4:5], det[:, 5:6]], 1)] if len(det) else [torch.zeros(0, 6)]
    draw_mosaic(tensor, boxes, path, names, max_size=max(img.shape[:2]))


def output_stems(files: "list[Path]") -> "dict[Path, Path]":
    """{image path: output path without suffix}, one distinct stem per image, so no result overwrites another.

    The images' sub-folders below their common folder are kept (a/x.png, b/x.png); images of one folder that
    differ only in extension (a.jpg, a.png) keep it in the stem (a.jpg, a.png -> a.jpg.jpg, labels/a.jpg.txt)."""
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    stems = {p: p.relative_to(root).with_suffix("") for p in files}
    counts = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    stems = {p: (p.relative_to(root) if counts[stem] > 1 else stem) for p, stem in stems.items()}
    if len(set(stems.values())) < len(stems):  # e.g. a.png, a.jpg and a.png.jpg: full names are always distinct
        stems = {p: p.relative_to(root) for p in files}
    return stems


def detect(model: nn.Module, sources: Union[str, Path, Sequence[Union[str, Path]]], save_dir: Union[str, Path],
           img_size: int, names: Optional[Sequence[str]] = None, conf_thres: float = 0.25, iou_thres: float = 0.45,
           max_det: int = 300, classes: Optional[Sequence[int]] = None, save_format: str = "txt",
           device: Union[str, torch.device] = "cpu", verbose: bool = False,
           cache_dir: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Detect in every image of `sources` (see find_images); returns {image path: (n, 6) detections}."""
    from yolo.data.checks import load_image

    save_dir = Path(save_dir)
    files = find_images(sources, cache_dir)
    stems = output_stems(files)
    shared = sorted(str(p) for p, stem in stems.items() if stem.name == p.name)
    if shared and verbose:
        print(f"{len(shared)} images share a name with another extension (e.g. {shared[0]}): their results keep "
              "the extension in the name (a.png -> a.png.jpg, labels/a.png.txt)")
    out = {}
    for path in files:
        stem = stems[path]
        for folder in (save_dir / "labels" / stem.parent, save_dir / stem.parent):
            folder.mkdir(parents=True, exist_ok=True)
        img = load_image(path)
        det = detect_image(model, img, img_size, conf_thres, iou_thres, max_det, classes, device)
        write_predictions(det, img.shape[:2], names, save_dir / "labels" / stem, save_format)
        draw(img, det, names, save_dir / f"{stem}.jpg")
        out[str(path)] = det
        if verbose:
            counts = {}
            for c in det[:, 5].tolist():
                label = names[int(c)] if names else str(int(c))
                counts[label] = counts.get(label, 0) + 1
            found = ", ".join(f"{n} {k}" for k, n in counts.items()) or "nothing"
            print(f"{path}: {img.shape[1]}x{img.shape[0]}, {found}")
    return out


def run(args: argparse.Namespace) -> Path:
    from yolo.darknet_weights import WeightsError
    from yolo.utils.run_dir import claim_run_dir
    from yolo.utils.torch_utils import DeviceError, select_device
    from yolo.weights import build_model

    if not 0 <= args.conf_thres <= 1 or not 0 < args.iou_thres <= 1:
        raise DetectError(f"--conf-thres must be in [0, 1] and --iou-thres in (0, 1], got {args.conf_thres}, "
                          f"{args.iou_thres}")
    if args.img_size is not None and (args.img_size < 32 or args.img_size % 32):
        raise DetectError(f"--img-size {args.img_size} must be a multiple of 32")
    find_images(args.source, args.cache_dir)  # fail on a bad source before any output folder is made
    try:
        device = select_device(args.device)
        model, info = build_model(args.weights, cfg=args.cfg, device=device)
    except DeviceError as e:
        raise DetectError(str(e)) from None
    except (WeightsError, FileNotFoundError, ValueError) as e:
        raise DetectError(f"--weights: {e}") from None
    names = [n.strip() for n in args.names.split(",")] if args.names else info.get("names")
    if names is not None and len(names) != model.num_classes:
        raise DetectError(f"--names: {len(names)} names but {args.weights} detects {model.num_classes} classes")
    bad = [c for c in args.classes or [] if not 0 <= c < model.num_classes]
    if bad:
        raise DetectError(f"--classes {bad}: not in 0..{model.num_classes - 1}")
    img_size = args.img_size or (info.get("opt") or {}).get("img_size") or 416
    save_dir = claim_run_dir(Path(args.project) / args.name, exist_ok=args.exist_ok)
    detect(model, args.source, save_dir, img_size, names,
           args.conf_thres, args.iou_thres, args.max_det, args.classes, args.save_format, device, args.verbose,
           args.cache_dir)
    return save_dir


def main(argv: Optional[List[str]] = None) -> int:
    """Exit status: 0 done (every image has its own results), 2 bad options, input or file system (one line
    naming the value or file: a read-only --project, a full disk), 130 interrupted."""
    from yolo.data import DataError
    from yolo.utils.errors import report

    args = build_parser().parse_args(argv)
    try:
        save_dir = run(args)
    except (DetectError, DataError, OSError) as e:
        return report(PROG, e)
    except KeyboardInterrupt:
        return 130
    if args.verbose:
        print(f"results in {save_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
