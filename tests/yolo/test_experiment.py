"""`python -m yolo.experiment` at toy size (a few variants, 1 epoch, 8 generated 64-px images): the summary
files and figure, the ratios against leaky, skipping finished runs, the option checks; the variants (issue 20)
and the memory column of an installed yolo (issue 16)."""
import contextlib
import csv
import io
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo import experiment

TINY = ["--data", "shapes:n_train=8,n_val=4,img_size=64", "--img-size", "64", "--epochs", "1", "--batch-size", "4",
        "--variants", "leaky,swish,swish-fused-recompute", "--device", "cpu", "--workers", "0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny experiment, shared by the tests below: (output folder, its cache dir, printed text)."""
    root = tmp_path_factory.mktemp("experiment")
    out, cache = root / "out", root / "cache"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert experiment.main(TINY + ["--out", str(out), "--cache-dir", str(cache)]) == 0
    return out, cache, buffer.getvalue()


def read_summary(out):
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_summary_csv_has_every_activation_and_ratio(finished):
    out, _, _ = finished
    rows = read_summary(out)
    assert [r["variant"] for r in rows] == ["leaky", "swish", "swish-fused-recompute"]
    for metric in experiment.METRICS:
        assert f"{metric}_vs_leaky" in rows[0]
    leaky, swish, fused = rows
    # The fused row trains the same Swish network, with less saved for backward than even LeakyReLU.
    assert float(fused["saved_act_mb"]) < float(leaky["saved_act_mb"])
    assert float(fused["train_loss"]) == pytest.approx(float(swish["train_loss"]), rel=1e-3)
    for key in ("train_loss", "time_per_epoch_s", "saved_act_mb"):
        assert float(leaky[key]) > 0 and math.isfinite(float(swish[key]))
        assert float(leaky[f"{key}_vs_leaky"]) == 1.0
    # Swish keeps its input and writes a new output; the in-place LeakyReLU keeps only its output.
    assert float(swish["saved_act_mb"]) > float(leaky["saved_act_mb"])
    ratio = float(swish["saved_act_mb"]) / float(leaky["saved_act_mb"])
    assert float(swish["saved_act_mb_vs_leaky"]) == pytest.approx(ratio, rel=1e-4)
    assert all(r["epochs"] == "1" and r["device"] == "cpu" for r in rows)


def test_summary_markdown_and_figure(finished):
    out, _, printed = finished
    md = (out / "summary.md").read_text()
    assert "| variant | final train loss | mAP@0.5 | mAP@0.5:0.95 | time/epoch (s) | saved activations (MB) |" in md
    assert "| leaky | " in md and "| swish | " in md and "(1.00x)" in md
    png = (out / "results_activations.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a real figure, not an empty canvas
    for activation in ("leaky", "swish"):
        assert (out / activation / "results.csv").is_file()
    assert "[1/3 leaky] epoch 1/1" in printed and "[2/3 swish] epoch 1/1" in printed  # progress: i/N, epoch


def test_finished_runs_are_skipped(finished, capsys):
    out, cache, _ = finished
    before = (out / "leaky" / "results.csv").stat().st_mtime_ns
    assert experiment.main(TINY + ["--out", str(out), "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "skipping leaky" in printed and "skipping swish" in printed and "0 to train" in printed
    assert (out / "leaky" / "results.csv").stat().st_mtime_ns == before
    assert len(read_summary(out)) == 3


def test_changed_options_are_not_mistaken_for_finished(finished, capsys):
    out, _, _ = finished
    args = experiment.parse_args(TINY)
    options = experiment.row_identity(args, experiment.variant("leaky"))
    assert experiment.finished_run(out / "leaky", options) is not None
    assert experiment.finished_run(out / "leaky", {**options, "epochs": 2}) is None
    assert "epochs" in capsys.readouterr().out
    # A variant whose definition changed (here: the same name meaning another activation) is retrained.
    redefined = experiment.Variant("leaky", "", {"activation": "swish"})
    assert experiment.finished_run(out / "leaky", experiment.row_identity(args, redefined)) is None
    assert "variant" in capsys.readouterr().out


def test_identical_curves_are_labelled(finished):
    out, _, _ = finished
    rows = experiment.read_curves(out / "leaky")
    other = [{**r, "metrics/mAP_0.5": r["metrics/mAP_0.5"] + 1} for r in rows]
    labels = experiment.same_curve_labels({"swish": rows, "silu": rows, "mish": other})
    assert labels == {"swish": "swish", "silu": "silu (= swish)", "mish": "mish"}


def test_ratios_without_a_baseline_are_nan():
    rows = experiment.add_ratios([{"variant": "swish", **{m: 1.0 for m in experiment.METRICS}}])
    assert math.isnan(rows[0]["mAP_0.5_vs_leaky"])


def test_unknown_variant_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        experiment.parse_args(["--variants", "leaky,swishh"])
    assert e.value.code == 2 and "swishh" in capsys.readouterr().err


# ---- issue 13: rows resume mid-row, bad input is a one-line exit 2, --skip-bad ----------------------------------

ONE_ROW = ["--data", "shapes:n_train=8,n_val=4,img_size=64", "--img-size", "64", "--batch-size", "4",
           "--variants", "leaky", "--device", "cpu", "--workers", "0"]


def test_an_interrupted_row_continues_from_its_last_epoch(tmp_path, monkeypatch, capsys):
    argv = ONE_ROW + ["--epochs", "2", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    seen = []
    real = experiment.Progress.on_train_batch_end

    def watch(self, epoch, batch, loss_items):
        seen.append(epoch)
        if epoch == 1 and not getattr(watch, "fired", False):  # the "kill" in the middle of the second epoch
            watch.fired = True
            raise KeyboardInterrupt
        real(self, epoch, batch, loss_items)

    monkeypatch.setattr(experiment.Progress, "on_train_batch_end", watch)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            status = experiment.main(argv)
        except KeyboardInterrupt:
            pytest.fail("the interrupt escaped experiment.main")  # (and would end this pytest session)
    assert status == 130
    assert "run the same command again" in capsys.readouterr().err
    del seen[:]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert experiment.main(argv) == 0
    assert set(seen) == {1}  # epoch 0 was not trained again
    assert "resuming" in buffer.getvalue() and "1 of 2 epochs were done" in buffer.getvalue()
    assert [r["epoch"] for r in experiment.read_curves(tmp_path / "out" / "leaky")] == [0, 1]
    assert read_summary(tmp_path / "out")[0]["epochs"] == "2"


def test_a_corrupt_train_image_exits_2_naming_it_and_skip_bad_trains(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / split / "labels").mkdir(parents=True)
        (tmp_path / split / "images").mkdir()
        for i in range(4):
            Image.new("RGB", (64, 48), (30 * i, 160, 30)).save(tmp_path / split / "images" / f"{i}.jpg")
            (tmp_path / split / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "train/images/3.jpg")  # noise: the scan data is most of the file
    full = (tmp_path / "train/images/3.jpg").read_bytes()
    (tmp_path / "train/images/3.jpg").write_bytes(full[: len(full) // 2])  # the header check passes it
    (tmp_path / "data.yaml").write_text("train: train/images\nval: val/images\nnames: [thing]\n")
    argv = [*ONE_ROW[2:], "--data", str(tmp_path / "data.yaml"), "--epochs", "1", "--out", str(tmp_path / "out")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert experiment.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "train/images/3.jpg" in err and "--skip-bad" in err
    with contextlib.redirect_stdout(io.StringIO()), pytest.warns(UserWarning, match=r"skipped 1 bad sample"):
        assert experiment.main(argv + ["--skip-bad"]) == 0
    assert len(read_summary(tmp_path / "out")) == 1


def test_a_malformed_cfg_exits_2_on_one_line(tmp_path, capsys):
    cfg = tmp_path / "broken.cfg"
    cfg.write_text("[net]\nchannels=3\n[convolutional]\nfilters\n")
    with contextlib.redirect_stdout(io.StringIO()):
        assert experiment.main(ONE_ROW + ["--cfg", str(cfg), "--epochs", "1", "--out", str(tmp_path / "out"),
                                          "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "broken.cfg:4" in err


# ---- issue 20: variants --------------------------------------------------------------------------------------

SEED = ["leaky", "swish", "prelu", "prelu1", "scale_xy=1.2", "scale_xy=1.1", "scale_xy=1.5", "giou2", "pan", "bias-5",
        "adam9e-5", "swish-me", "swish-fused", "swish-fused-recompute"]


def test_seed_group_is_the_threads_rows():
    rows = experiment.parse_variants("seed")
    assert [r.name for r in rows] == SEED and len(rows) >= 10
    by_name = {r.name: r for r in rows}
    assert by_name["leaky"].options == {"activation": "leaky"}
    assert by_name["prelu1"].options == {"activation": "prelu1"}
    assert [by_name[f"scale_xy={s}"].options for s in ("1.2", "1.1", "1.5")] == \
        [{"scale_xy": 1.2}, {"scale_xy": 1.1}, {"scale_xy": 1.5}]
    assert by_name["giou2"].hyp == {"giou_pow": 2.0} and not by_name["giou2"].options
    assert by_name["pan"].options == {"cfg": "yolov3-spp-pan"}
    assert by_name["bias-5"].options == {"head_bias": -5.0}
    assert by_name["adam9e-5"].options == {"optimizer": "adam"} and by_name["adam9e-5"].hyp == {"lr0": 9e-5}
    assert by_name["swish-fused-recompute"].options == {"activation": "swish", "fuse_bn_recompute": True}


def test_variant_names_groups_and_errors():
    names = [r.name for r in experiment.parse_variants("leaky, seed ,scale_xy=1.3,bias-4.5,sgd0.01,activations")]
    assert names[:len(SEED)] == SEED and names.count("leaky") == 1  # each once, in order
    assert names[len(SEED):] == ["scale_xy=1.3", "bias-4.5", "sgd0.01", "swish-naive", "silu", "mish"]
    assert experiment.variant("bias-4.5").options == {"head_bias": -4.5}
    assert experiment.variant("sgd0.01").options == {"optimizer": "sgd"}
    assert experiment.variant("sgd0.01").hyp == {"lr0": 0.01}
    assert [r.name for r in experiment.parse_variants(experiment.parse_args([]).variants)] == \
        list(experiment.GROUPS["activations"])  # the default: the activation comparison
    for bad in ("", " , ", "scale_xy=0", "scale_xy=x", "adam0", "adam-1e-3", "bias", "giou3", "swishh"):
        with pytest.raises(ValueError):
            experiment.parse_variants(bad)


def test_help_says_row_11_is_left_out(capsys):
    with pytest.raises(SystemExit):
        experiment.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "Adam uFBCE 8192" in text and "left out" in text and "seed" in text


def test_variants_change_what_they_name(tmp_path):
    """A 2-variant run: each row trains with its option (scale_xy in the checkpointed model, Adam at 9e-5
    in the optimizer), and both rows land in the summary with the same columns."""
    from yolo.utils.checkpoint import load_checkpoint, load_model
    from yolo.weights import build_model

    out = tmp_path / "out"
    argv = [*ONE_ROW[:-4], "--variants", "scale_xy=1.2,adam9e-5", "--device", "cpu", "--workers", "0", "--epochs",
            "1", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert experiment.main(argv) == 0
    rows = read_summary(out)
    assert [r["variant"] for r in rows] == ["scale_xy=1.2", "adam9e-5"]
    for r in rows:
        assert all(math.isfinite(float(r[m])) for m in ("train_loss", "time_per_epoch_s", "saved_act_mb"))
        assert r["train_loss_vs_leaky"] == "nan"  # no baseline row: no ratios
    last = out / "scale_xy=1.2" / "weights" / "last.pt"
    assert [h.scale_xy for h in load_model(last).yolo_layers] == [1.2, 1.2]  # rebuilt as trained
    assert [h.scale_xy for h in build_model(last)[0].yolo_layers] == [1.2, 1.2]
    ckpt = load_checkpoint(out / "adam9e-5" / "weights" / "last.pt")
    assert ckpt["opt"]["optimizer"] == "adam" and ckpt["hyp"]["lr0"] == 9e-5
    assert {g["initial_lr"] for g in ckpt["optimizer"]["param_groups"]} == {9e-5}
    assert all("exp_avg_sq" in state for state in ckpt["optimizer"]["state"].values())  # Adam's moments
    assert load_checkpoint(last)["hyp"]["lr0"] != 9e-5  # the other row keeps the trainer's lr
    md = (out / "summary.md").read_text()
    assert "- `adam9e-5`: --optimizer adam, hyp lr0: 9e-05" in md and "- `scale_xy=1.2`: --scale-xy 1.2" in md


# ---- issue 16: the memory column comes from the library, not from benchmarks/ by file path -------------------

def test_memory_column_works_in_an_installed_yolo(tmp_path):
    """yolo copied alone into a site folder (as `pip install .` puts it, no benchmarks/ beside it), with any
    import of the benchmark scripts refused: the experiment's memory function still counts, and gives the
    bytes sk.saved_for_backward counts for the same model here."""
    import swishkernels as sk
    from yolo.models import Darknet

    site = tmp_path / "site"
    shutil.copytree(Path(experiment.__file__).resolve().parents[1], site / "yolo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = textwrap.dedent("""
        import importlib.abc, sys
        from argparse import Namespace

        class NoBenchmarks(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("benchmarks", "memory", "peers", "machine"):
                    raise ImportError("benchmarks/ is not installed")

        sys.meta_path.insert(0, NoBenchmarks())
        import yolo
        from yolo.experiment.memory import saved_activation_mb
        from yolo.experiment.variants import variant
        args = Namespace(cfg="yolov3-tiny", img_size=64, batch_size=3)
        print(yolo.__file__)
        print(repr(saved_activation_mb(args, variant("leaky"), 8)))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(sk.__file__).resolve().parents[1])])}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    where, mb = done.stdout.split()
    assert Path(where).is_relative_to(site)
    torch.manual_seed(0)
    model = Darknet("yolov3-tiny", num_classes=8, activation="leaky").train()
    saved = sk.saved_for_backward(model, torch.rand(3, 3, 64, 64))
    assert math.isfinite(float(mb)) and float(mb) == pytest.approx(saved.mib, rel=1e-12)


def test_a_read_only_out_folder_exits_2_on_one_line(tmp_path, monkeypatch, capsys):
    from fs_faults import Denied

    faults = Denied(monkeypatch)
    try:
        parent = faults.read_only_folder(tmp_path / "ro")
        status = experiment.main(ONE_ROW + ["--epochs", "1", "--out", str(parent / "out"),
                                            "--cache-dir", str(tmp_path / "cache")])
    finally:
        faults.restore()
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert "\n" not in err and str(parent / "out") in err
