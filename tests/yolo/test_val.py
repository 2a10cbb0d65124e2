"""python -m yolo.val: the trainer's own numbers for its checkpoint, from last.pt, best.pt or a bare
state_dict, the printed report, and one-line exit-2 errors."""
import json
import math

import pytest
import torch

from yolo.evaluate import COCO_STAT_NAMES
from yolo.utils.checkpoint import load_checkpoint
from yolo.val import main, validate


def trainer_row(trained):
    return load_checkpoint(trained["last"])["results"][-1]


@pytest.fixture(scope="module")
def last_metrics(trained):
    return validate(trained["last"], device="cpu", verbose=False)


def test_val_reproduces_the_trainers_evaluation(trained, last_metrics):
    row, m = trainer_row(trained), last_metrics
    # The validation losses depend on every weight, image and letterbox: equal only for the same model on
    # the same inputs in the same batches (exact: same CPU ops in the same order).
    for k in ("box", "obj", "cls"):
        assert m[f"{k}_loss"] == row[f"val/{k}_loss"] == trained[f"val/{k}_loss"]
    for k in ("precision", "recall", "mAP_0.5", "mAP_0.5:0.95"):
        assert m[k] == row[f"metrics/{k}"] == trained[k]
    assert m["img_size"] == 64 and m["batch_size"] == 4 and m["images"] == 4  # the checkpoint's options


def test_best_pt_and_a_bare_state_dict_give_the_same_numbers(trained, last_metrics, tmp_path):
    best = validate(trained["best"], device="cpu", verbose=False)
    bare = tmp_path / "ema_state_dict.pt"
    torch.save(load_checkpoint(trained["last"])["ema"]["model"], bare)
    plain = validate(bare, data="shapes:n_train=8,n_val=4,img_size=64", cfg="yolov3-tiny", img_size=64, batch_size=4,
                     cache_dir=trained["cache_dir"], device="cpu", verbose=False)
    for m in (best, plain):
        assert m["coco_stats"] == last_metrics["coco_stats"]
    assert best["box_loss"] == last_metrics["box_loss"]
    assert math.isnan(plain["box_loss"])  # no hyperparameters in a bare state_dict: no loss


def test_cli_prints_coco_stats_and_per_class_table_and_saves_json(trained, tmp_path, capsys):
    out = tmp_path / "preds.json"
    assert main(["--weights", trained["last"], "--device", "cpu", "--save-json", str(out),
                 "--conf-thres", "0.0001"]) == 0
    text = capsys.readouterr().out
    for name in COCO_STAT_NAMES:
        assert f"  {name} " in text
    assert "AP50-95" in text and "circle" in text and "triangle_outline" in text
    results = json.loads(out.read_text())
    assert isinstance(results, list) and all({"image_id", "category_id", "bbox", "score"} <= set(r) for r in results)


@pytest.mark.parametrize("argv, named", [
    (["--weights", "no/such.pt"], "no/such.pt"),
    (["--data", "shapes:n_train=8,n_val=4,img_size=64,bogus=1"], "bogus"),
    (["--img-size", "70"], "--img-size 70"),
    (["--conf-thres", "2"], "--conf-thres"),
])
def test_cli_errors_exit_2_on_one_line(trained, argv, named, capsys):
    if argv[0] != "--weights":
        argv = ["--weights", trained["last"], *argv]
    assert main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and named in err and "Traceback" not in err


def test_class_count_mismatch_names_both(trained, tmp_path, capsys):
    data = tmp_path / "data.yaml"
    data.write_text("shapes: {n_train: 8, n_val: 4, img_size: 64}\n")
    ckpt = load_checkpoint(trained["last"])
    bare = tmp_path / "three_classes.pt"
    from yolo.models import Darknet

    torch.save(Darknet("yolov3-tiny", num_classes=3).state_dict(), bare)
    assert main(["--weights", str(bare), "--cfg", "yolov3-tiny", "--data", str(data), "--cache-dir",
                 trained["cache_dir"], "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "detects 3 classes" in err and f"has {ckpt['nc']}" in err
