"""yolo.evaluate: predictions -> original pixels -> COCO json -> COCOeval. Ground truth fed back scores 1.0,
shifted boxes less, no detections 0, and precision/recall come from the right matches."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from yolo.data import create_dataloader
from yolo.evaluate import COCO_STAT_NAMES, evaluate, score_detections

CATEGORY_IDS = [5, 17, 42]           # COCO-style ids with gaps
NAMES = ["a", "b", "c"]
# (width, height, [(x1, y1, x2, y2, category_id)]): sizes above and below the 96 px input, both aspects
IMAGES = [
    (160, 100, [(30, 20, 70, 60, 5), (90, 40, 150, 90, 42)]),
    (90, 120, [(10, 10, 50, 40, 17), (40, 60, 80, 110, 17), (5, 70, 30, 115, 5)]),
    (200, 200, [(20, 120, 180, 190, 42)]),
    (64, 48, [(8, 8, 40, 40, 17)]),
]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    images, annotations = [], []
    for i, (w, h, boxes) in enumerate(IMAGES):
        pixels = np.full((h, w, 3), 60, np.uint8)
        for x1, y1, x2, y2, cid in boxes:
            pixels[y1:y2, x1:x2] = (200, 40 * CATEGORY_IDS.index(cid), 90)
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": cid,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        images.append({"id": 100 + i, "file_name": f"{i}.png", "width": w, "height": h})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": cid, "name": n} for cid, n in zip(CATEGORY_IDS, NAMES)]}
    (root / "instances.json").write_text(json.dumps(gt))
    return {"images": str(root / "images"), "annotations": str(root / "instances.json")}


class FakeDetector(torch.nn.Module):
    """Replays, batch by batch, the loader's targets as eval-mode output (xywh in input pixels, objectness,
    one-hot class), optionally with width and height scaled by `shrink` about the box centre."""

    def __init__(self, loader, nc, shrink=1.0, objectness=1.0):
        super().__init__()
        self.outputs = []
        for imgs, targets, metas in loader:
            _, _, h, w = imgs.shape
            out = torch.zeros(len(metas), max(1, len(targets)), 5 + nc)
            for j, (i, cls, xc, yc, bw, bh) in enumerate(targets.tolist()):
                out[int(i), j, :4] = torch.tensor([xc * w, yc * h, shrink * bw * w, shrink * bh * h])
                out[int(i), j, 4] = objectness
                out[int(i), j, 5 + int(cls)] = 1.0
            self.outputs.append(out)
        self.calls = 0

    def forward(self, x, return_raw=False):
        out = self.outputs[self.calls]
        self.calls += 1
        return (out, ["raw"]) if return_raw else out


def test_ground_truth_as_predictions_scores_one(split, tmp_path):
    loader, ds = create_dataloader(split, NAMES, 96, 3, augment=False, hyp=None)
    model = FakeDetector(loader, len(NAMES))
    seen = []

    def loss_fn(raw, targets):
        seen.append((raw, len(targets)))
        return torch.tensor(0.5), torch.tensor([1.0, 2.0, 3.0, 6.0])

    out = tmp_path / "results.json"
    m = evaluate(model, loader, ds, loss_fn=loss_fn, save_json=out)
    assert m["mAP_0.5"] == pytest.approx(1.0) and m["mAP_0.5:0.95"] == pytest.approx(1.0)
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(1.0)
    assert len(m["coco_stats"]) == len(COCO_STAT_NAMES) and m["coco_stats"][8] == pytest.approx(1.0)   # AR100
    assert (m["box_loss"], m["obj_loss"], m["cls_loss"]) == (1.0, 2.0, 3.0)
    assert seen == [(["raw"], 6), (["raw"], 1)]   # the raw heads and targets of each batch
    assert model.training   # mode restored

    # the json holds original-pixel boxes with the dataset's own category ids
    gt = {(a["image_id"], a["category_id"], tuple(a["bbox"])) for a in ds.coco_gt()["annotations"]}
    results = json.loads(out.read_text())
    assert len(results) == len(gt)
    for r in results:
        match = [g for g in gt if g[:2] == (r["image_id"], r["category_id"])
                 and np.abs(np.subtract(g[2], r["bbox"])).max() <= 1.0]
        assert match, r


def test_shrunk_boxes_score_less(split):
    loader, ds = create_dataloader(split, NAMES, 96, 2, augment=False, hyp=None)
    m = evaluate(FakeDetector(loader, len(NAMES), shrink=0.575 ** 0.5), loader, ds)
    # IoU 0.575 with every object: a match at IoU thresholds 0.5 and 0.55, a miss at 0.6 ... 0.95
    assert m["mAP_0.5"] == pytest.approx(1.0)
    assert m["mAP_0.5:0.95"] == pytest.approx(0.2)
    assert math.isnan(m["box_loss"])   # no loss_fn


def test_no_detections_give_zeros(split):
    loader, ds = create_dataloader(split, NAMES, 96, 2, augment=False, hyp=None)
    m = evaluate(FakeDetector(loader, len(NAMES), objectness=0.0), loader, ds)
    assert m["mAP_0.5"] == m["mAP_0.5:0.95"] == m["precision"] == m["recall"] == 0.0
    assert m["coco_stats"] == [0.0] * 12


def one_class_gt(n):
    images = [{"id": i + 1, "file_name": f"{i}.png", "width": 100, "height": 100} for i in range(n)]
    annotations = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600,
                    "iscrowd": 0} for i in range(n)]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}


def test_precision_recall_at_best_f1():
    # 4 objects; 2 found with score 0.9, 2 false detections elsewhere with score 0.5
    results = [{"image_id": i, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9} for i in (1, 2)]
    results += [{"image_id": i, "category_id": 1, "bbox": [60, 60, 30, 30], "score": 0.5} for i in (3, 4)]
    m = score_detections(one_class_gt(4), results)
    # at conf <= 0.5: P 0.5, R 0.5 (F1 0.5); above: P 1, R 0.5 (F1 0.67) -> the latter
    assert (m["precision"], m["recall"]) == (1.0, 0.5)
    assert 0.5 < m["conf_pr"] <= 0.9
    assert m["mAP_0.5"] == pytest.approx(0.5, abs=0.01)


def test_duplicates_and_misses_are_false_positives():
    box = [10, 10, 40, 40]
    duplicate = [{"image_id": 1, "category_id": 1, "bbox": box, "score": s} for s in (0.9, 0.8)]
    m = score_detections(one_class_gt(1), duplicate)
    assert (m["precision"], m["recall"]) == (1.0, 1.0) and m["conf_pr"] > 0.8   # the duplicate is cut off
    miss_first = [{"image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "score": 0.9},
                  {"image_id": 1, "category_id": 1, "bbox": box, "score": 0.8}]
    m = score_detections(one_class_gt(1), miss_first)
    assert (m["precision"], m["recall"]) == (0.5, 1.0)
    assert m["mAP_0.5"] == pytest.approx(0.5, abs=0.01)


def test_score_with_no_results_or_no_ground_truth():
    assert score_detections(one_class_gt(2), [])["mAP_0.5"] == 0.0
    empty = dict(one_class_gt(2), annotations=[])
    assert score_detections(empty, [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.9}]) \
        ["mAP_0.5:0.95"] == 0.0


def test_zero_width_coco_box_does_not_lower_a_perfect_score(tmp_path):
    """Issue 13: a zero-width box was no training target but stayed in the ground truth, so perfect
    detections scored mAP@0.5 0.969. One ground truth now, and a warning names the annotation."""
    import warnings

    root = tmp_path
    (root / "images").mkdir()
    images, annotations = [], []
    for i, (w, h, boxes) in enumerate(IMAGES):
        Image.fromarray(np.full((h, w, 3), 60, np.uint8)).save(root / "images" / f"{i}.png")
        images.append({"id": 100 + i, "file_name": f"{i}.png", "width": w, "height": h})
        for x1, y1, x2, y2, cid in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": cid,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    annotations.append({"id": 99, "image_id": 100, "category_id": 5, "bbox": [10, 10, 0, 30], "area": 0,
                        "iscrowd": 0})
    (root / "instances.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": cid, "name": n} for cid, n in zip(CATEGORY_IDS, NAMES)]}))
    split = {"images": str(root / "images"), "annotations": str(root / "instances.json")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader, ds = create_dataloader(split, NAMES, 96, 3, augment=False, hyp=None)
    assert any("annotation 99 (image 0.png)" in str(w.message) for w in caught)
    m = evaluate(FakeDetector(loader, len(NAMES)), loader, ds)
    assert m["mAP_0.5"] == pytest.approx(1.0) and m["recall"] == pytest.approx(1.0)


def test_per_class_ap_are_the_terms_of_the_mean(split):
    loader, ds = create_dataloader(split, NAMES, 96, 2, augment=False, hyp=None)
    m = evaluate(FakeDetector(loader, len(NAMES), shrink=0.575 ** 0.5), loader, ds)
    assert sorted(m["per_class"]) == sorted(CATEGORY_IDS)
    assert [ap50 for ap50, _ in m["per_class"].values()] == pytest.approx([1.0] * 3)
    assert [ap for _, ap in m["per_class"].values()] == pytest.approx([0.2] * 3)
    assert np.mean([ap for _, ap in m["per_class"].values()]) == pytest.approx(m["mAP_0.5:0.95"])
