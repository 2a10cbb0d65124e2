"""Validation: model -> NMS -> COCO results json (original pixels) -> pycocotools COCOeval -> metrics."""

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import torch

# The 12 numbers COCOeval.summarize() prints, in its order (AP/AR averaged over IoU 0.5:0.95 unless named).
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def evaluate(model, loader, dataset, device="cpu", conf_thres=0.001, iou_thres=0.6, max_det=300, loss_fn=None,
             half=False, save_json=None, verbose=False):
    """Score `model` on `loader` (built over `dataset`) with pycocotools.

    Returns {precision, recall, mAP_0.5, mAP_0.5:0.95, coco_stats (the 12 COCOeval numbers, -1 where
    COCO has nothing to measure), per_class ({category_id: (AP50, AP)}), conf_pr, box_loss, obj_loss, cls_loss}.
    precision and recall are at IoU 0.5, class means over the classes present in the ground truth, at the single
    confidence threshold `conf_pr` that maximizes their mean F1 (as Ultralytics reports them).
    Losses are means over batches of `loss_fn(raw_heads, targets)` -> (loss, [box, obj, cls, total]) (or just
    those items), from the same eval-mode forward (`model(x, return_raw=True)`, so BatchNorm statistics are
    untouched); NaN without `loss_fn`. `half` runs the model under fp16 autocast on CUDA. `save_json` writes
    the COCO results list there. The model's train/eval mode is restored afterwards.
    """
    from tqdm import tqdm

    from yolo.boxes import non_max_suppression

    device = torch.device(device)
    was_training = model.training
    model.eval()
    results, losses = [], []
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=half and device.type == "cuda")
    try:
        with torch.no_grad():
            for imgs, targets, metas in tqdm(loader, desc="val", leave=False, disable=not verbose):
                imgs = imgs.to(device, non_blocking=True)
                with autocast:
                    out = model(imgs, return_raw=True) if loss_fn is not None else model(imgs)
                pred, raw = out if loss_fn is not None else (out, None)
                if loss_fn is not None:
                    losses.append(_loss_items(loss_fn(raw, targets.to(device))))
                dets = non_max_suppression(pred.float(), conf_thres, iou_thres, max_det)
                for det, meta in zip(dets, metas):
                    results += detections_to_coco(det, meta, imgs.shape[2:], dataset.category_ids)
    finally:
        model.train(was_training)

    if save_json:
        Path(save_json).parent.mkdir(parents=True, exist_ok=True)
        Path(save_json).write_text(json.dumps(results))
    metrics = score_detections(dataset.coco_gt(), results, verbose=verbose)
    mean = torch.stack(losses).mean(0).tolist() if losses else [math.nan] * 3
    metrics.update(box_loss=mean[0], obj_loss=mean[1], cls_loss=mean[2])
    return metrics


def _loss_items(out):
    """loss_fn may return (loss, items) or the items alone; keep [box, obj, cls] as a CPU float tensor."""
    items = out[1] if isinstance(out, (tuple, list)) else out
    return torch.as_tensor(items, dtype=torch.float32).detach().cpu().reshape(-1)[:3]


def detections_to_coco(det, meta, input_shape, category_ids):
    """NMS output (n, 6) [x1, y1, x2, y2, conf, cls] in letterboxed input pixels -> COCO result dicts with
    bbox [x, y, w, h] in original-image pixels (via the letterbox's ratio and pad in `meta`)."""
    from yolo.boxes import scale_coords

    if det is None or not len(det):
        return []
    det = det.detach().float().cpu()
    boxes = scale_coords(tuple(input_shape), det[:, :4], meta["orig_shape"], (meta["ratio"], meta["pad"]))
    boxes[:, 2:] -= boxes[:, :2]
    return [{"image_id": int(meta["image_id"]), "category_id": int(category_ids[int(c)]),
             "bbox": [round(v, 3) for v in box], "score": round(s, 5)}
            for box, s, c in zip(boxes.tolist(), det[:, 4].tolist(), det[:, 5].tolist())]


def score_detections(coco_gt, results, verbose=False):
    """COCOeval of COCO-format results against a ground-truth dict -> metrics (see `evaluate`), losses aside.

    No results (or no ground truth boxes) give zeros rather than pycocotools' crash or -1s.
    """
    out = {"precision": 0.0, "recall": 0.0, "mAP_0.5": 0.0, "mAP_0.5:0.95": 0.0,
           "coco_stats": [0.0] * len(COCO_STAT_NAMES), "conf_pr": 0.0, "per_class": {}}
    if not results or not coco_gt.get("annotations"):
        if verbose:
            print("evaluate: nothing to score (no detections or no ground-truth boxes)")
        return out
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        gt = COCO()
        # Copies: pycocotools writes keys into the annotation dicts it is given.
        gt.dataset = dict(coco_gt, annotations=[dict(a) for a in coco_gt["annotations"]])
        gt.createIndex()
        dt = gt.loadRes([dict(r) for r in results])
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = [float(s) for s in coco_eval.stats]
    precision, recall, conf = precision_recall(coco_eval)
    out.update(precision=precision, recall=recall, conf_pr=conf, coco_stats=stats, per_class=per_class_ap(coco_eval),
               **{"mAP_0.5": max(stats[1], 0.0), "mAP_0.5:0.95": max(stats[0], 0.0)})
    if verbose:
        print(f"precision {precision:.3f}  recall {recall:.3f}  (IoU 0.5, conf {conf:.3f})")
    return out


def per_class_ap(coco_eval):
    """{category_id: (AP@0.5, AP@0.5:0.95)} from COCOeval's accumulated precision (area all, 100 detections),
    the per-class terms of the means in coco_stats; -1 for a class without ground truth."""
    precision = coco_eval.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
    out = {}
    for k, cid in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p50 = p[0][p[0] > -1]
        out[int(cid)] = (float(p50.mean()) if p50.size else -1.0, float(p[p > -1].mean()) if (p > -1).any() else -1.0)
    return out


def precision_recall(coco_eval, iou_index=0):
    """Mean precision and recall over ground-truth classes at IoU iouThrs[iou_index] (0.5), at the confidence
    threshold maximizing the mean F1, from COCOeval's own matches (area 'all', at most 100 detections an
    image). Returns (precision, recall, threshold)."""
    p = coco_eval.params
    n_area, n_img = len(p.areaRng), len(p.imgIds)
    thresholds = np.linspace(0, 1, 1001)
    curves = []
    for k in range(len(p.catIds)):
        entries = [e for e in coco_eval.evalImgs[k * n_area * n_img:k * n_area * n_img + n_img] if e is not None]
        n_gt = sum(int((np.asarray(e["gtIgnore"]) == 0).sum()) for e in entries)
        if n_gt == 0:
            continue   # classes absent from the ground truth do not enter the means
        scores = np.concatenate([np.asarray(e["dtScores"], float) for e in entries] + [np.zeros(0)])
        matched = np.concatenate([np.asarray(e["dtMatches"][iou_index]) > 0 for e in entries] + [np.zeros(0, bool)])
        ignored = np.concatenate([np.asarray(e["dtIgnore"][iou_index], bool) for e in entries] + [np.zeros(0, bool)])
        scores, matched = scores[~ignored], matched[~ignored]
        order = np.argsort(-scores, kind="mergesort")
        scores, cum_tp = scores[order], np.cumsum(matched[order])
        n_det = np.searchsorted(-scores, -thresholds, side="right")   # detections with score >= threshold
        tp = np.where(n_det > 0, cum_tp[np.maximum(n_det - 1, 0)] if len(cum_tp) else 0, 0)
        curves.append((tp / np.maximum(n_det, 1), tp / n_gt))
    if not curves:
        return 0.0, 0.0, 0.0
    precision, recall = np.array([c[0] for c in curves]), np.array([c[1] for c in curves])   # (classes, thresholds)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-16)
    best = int(np.argmax(f1.mean(0)))
    return float(precision[:, best].mean()), float(recall[:, best].mean()), float(thresholds[best])
