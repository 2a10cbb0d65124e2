"""Evaluate a checkpoint: `python -m yolo.val --weights runs/train/exp/weights/best.pt --data shapes`.

The trainer's own evaluation (yolo.evaluate on the val split, letterboxed at the training image size, the
same NMS thresholds and batch size), so a checkpoint scores here what it scored at the end of its epoch.
Prints COCOeval's 12 numbers and AP per class; --save-json writes the COCO results list.
Weights: a trainer checkpoint (last.pt, best.pt), or with --cfg a bare state_dict or a Darknet .weights.
"""
import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

PROG = "python -m yolo.val"
CONF_THRES, IOU_THRES, MAX_DET = 0.001, 0.6, 300  # what the trainer evaluates with
FALLBACK = {"img_size": 416, "batch_size": 16}     # for weights that do not record their training options


class ValError(ValueError):
    """A bad option or input; printed on one line, exit status 2."""


def build_parser():
    from yolo.train_args import OneLineParser

    p = OneLineParser(prog=PROG, description="Evaluate YOLOv3 weights with pycocotools.")
    p.add_argument("--weights", required=True, help="last.pt, best.pt, a state_dict .pt or Darknet .weights")
    p.add_argument("--data", help="'shapes[:k=v,..]' or a data YAML [the checkpoint's training data]")
    p.add_argument("--task", default="val", choices=["val", "test", "train"], help="split to score [val]")
    p.add_argument("--cfg", help="model cfg, for a state_dict or .weights [from the checkpoint]")
    p.add_argument("--img-size", type=int, help="letterbox size [the checkpoint's training size, else 416]")
    p.add_argument("--batch-size", type=int, help="[the checkpoint's, else 16]")
    p.add_argument("--conf-thres", type=float, default=CONF_THRES, help=f"[{CONF_THRES}]")
    p.add_argument("--iou-thres", type=float, default=IOU_THRES, help=f"NMS IoU threshold [{IOU_THRES}]")
    p.add_argument("--max-det", type=int, default=MAX_DET, help=f"detections kept per image [{MAX_DET}]")
    p.add_argument("--save-json", help="write the COCO results (detections) list to this file")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or N [cuda if available]")
    p.add_argument("--cache-dir", help="folder for generated datasets [the checkpoint's, else ~/.cache/swishkernels]")
    p.add_argument("--skip-bad", action="store_true", help="skip bad images/labels with a warning")
    p.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=True, help="progress and tables")
    return p


def check_options(args):
    if not 0 <= args.conf_thres <= 1 or not 0 < args.iou_thres <= 1:
        raise ValError(f"--conf-thres must be in [0, 1] and --iou-thres in (0, 1], got {args.conf_thres}, "
                       f"{args.iou_thres}")
    for key in ("img_size", "batch_size", "max_det"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise ValError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    if args.img_size is not None and args.img_size % 32:
        raise ValError(f"--img-size {args.img_size} is not a multiple of 32")


def validate(weights: Union[str, Path], data: Optional[str] = None, **options: Any) -> Dict[str, Any]:
    """Score `weights`; options as the CLI's long names with underscores. Returns the metrics dict of
    yolo.evaluate.evaluate plus names, counts per class (images, instances) and the resolved options."""
    args = build_parser().parse_args(["--weights", str(weights)])
    for key, value in options.items():
        if not hasattr(args, key):
            raise ValError(f"unknown option {key!r}")
        setattr(args, key, value)
    args.data = data
    return run(args)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from yolo.darknet_weights import WeightsError
    from yolo.data import DataError, create_dataloader, load_data_config
    from yolo.evaluate import evaluate
    from yolo.utils.torch_utils import DeviceError, select_device
    from yolo.weights import build_model

    check_options(args)
    try:
        device = select_device(args.device)
    except DeviceError as e:
        raise ValError(str(e)) from None
    try:
        model, info = build_model(args.weights, cfg=args.cfg, device=device)
    except (WeightsError, FileNotFoundError, ValueError) as e:
        raise ValError(f"--weights: {e}") from None
    trained = info.get("opt") or {}
    data = args.data or trained.get("data")
    if data is None:
        raise ValError(f"--data is needed: {args.weights} does not record its training data")
    cache_dir = args.cache_dir or trained.get("cache_dir")
    try:
        cfg = load_data_config(data, cache_dir=cache_dir, splits=(args.task,))  # only the scored split must exist
    except (DataError, FileNotFoundError, ValueError) as e:
        raise ValError(f"--data {data!r}: {e}") from None
    if args.task not in cfg:
        raise ValError(f"--data {data!r} has no {args.task!r} split")
    names = list(cfg["names"])
    if len(names) != model.num_classes:
        raise ValError(f"{args.weights} detects {model.num_classes} classes but {data} has {len(names)}")
    if info.get("names") and list(info["names"]) != names:
        print(f"WARNING: {args.weights} was trained with classes {info['names']}, {data} names {names}",
              file=sys.stderr)
    img_size = args.img_size or trained.get("img_size") or FALLBACK["img_size"]
    batch_size = args.batch_size or trained.get("batch_size") or FALLBACK["batch_size"]
    try:
        loader, dataset = create_dataloader(cfg[args.task], names=names, img_size=img_size, batch_size=batch_size,
                                            augment=False, hyp=None, shuffle=False, skip_bad=args.skip_bad,
                                            decode=True)
    except DataError as e:
        raise ValError(str(e)) from None
    loss_fn = None
    if info.get("hyp"):  # the validation loss the trainer logs, with the hyperparameters it trained with
        from yolo.loss import compute_loss

        hyp = info["hyp"]

        def loss_fn(outputs, targets):
            return compute_loss(outputs, targets, model, hyp)[1]

    metrics = evaluate(model, loader, dataset, device, conf_thres=args.conf_thres, iou_thres=args.iou_thres,
                       max_det=args.max_det, loss_fn=loss_fn, save_json=args.save_json, verbose=False)
    metrics.update(names=names, counts=class_counts(dataset), img_size=img_size, batch_size=batch_size,
                   data=str(data), images=len(dataset), category_ids=list(dataset.category_ids))
    return metrics


def class_counts(dataset):
    """{category_id: (images with the class, instances)} over the ground truth that is scored."""
    gt = dataset.coco_gt()
    images, instances = {}, {}
    for a in gt["annotations"]:
        if a.get("iscrowd", 0):
            continue
        instances[a["category_id"]] = instances.get(a["category_id"], 0) + 1
        images.setdefault(a["category_id"], set()).add(a["image_id"])
    return {cid: (len(images.get(cid, ())), instances.get(cid, 0)) for cid in dataset.category_ids}


def format_report(metrics, category_ids):
    """The 12 COCO numbers and a per-class table, as text."""
    from yolo.evaluate import COCO_STAT_NAMES

    lines = [f"{metrics['images']} images, img {metrics['img_size']}, {metrics['data']}"]
    lines += [f"  {name:<10} {value:7.4f}" for name, value in zip(COCO_STAT_NAMES, metrics["coco_stats"])]
    lines.append(f"{'class':>20}{'images':>9}{'instances':>11}{'AP50':>9}{'AP50-95':>9}")
    total = sum(n for _, n in metrics["counts"].values())
    lines.append(f"{'all':>20}{metrics['images']:>9}{total:>11}{metrics['mAP_0.5']:>9.4f}"
                 f"{metrics['mAP_0.5:0.95']:>9.4f}")
    for name, cid in zip(metrics["names"], category_ids):
        n_img, n_inst = metrics["counts"].get(cid, (0, 0))
        ap50, ap = metrics["per_class"].get(cid, (float("nan"), float("nan")))
        shown = (f"{ap50:>9.4f}{ap:>9.4f}" if n_inst else f"{'-':>9}{'-':>9}")  # no ground truth: not scored
        lines.append(f"{name:>20}{n_img:>9}{n_inst:>11}{shown}")
    lines.append(f"precision {metrics['precision']:.4f}, recall {metrics['recall']:.4f} "
                 f"(IoU 0.5, conf {metrics['conf_pr']:.3f})")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Exit status: 0 done, 2 bad options, input or file system (one line naming the value or file),
    130 interrupted."""
    from yolo.data import DataError
    from yolo.utils.errors import report

    args = build_parser().parse_args(argv)
    try:
        metrics = run(args)
    except (ValError, DataError, OSError) as e:  # OSError: a file that cannot be read or written, a full disk
        return report(PROG, e)
    except KeyboardInterrupt:
        return 130
    if args.verbose:
        print(format_report(metrics, metrics["category_ids"]))
        if args.save_json:
            print(f"wrote {Path(args.save_json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
