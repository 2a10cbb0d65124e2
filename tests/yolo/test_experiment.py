"""`python -m yolo.experiment` at toy size (2 activations, 1 epoch, 8 generated 64-px images): the summary
files and figure, the ratios against leaky, skipping finished runs, and the option checks."""
import contextlib
import csv
import io
import math

import numpy as np
import pytest

from yolo import experiment

TINY = ["--data", "shapes:n_train=8,n_val=4,img_size=64", "--img-size", "64", "--epochs", "1", "--batch-size", "4",
        "--activations", "leaky,swish,swish-fused-recompute", "--device", "cpu", "--workers", "0"]


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
    assert [r["activation"] for r in rows] == ["leaky", "swish", "swish-fused-recompute"]
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
    assert "| activation | final train loss | mAP@0.5 | mAP@0.5:0.95 | time/epoch (s) | saved activations (MB) |" in md
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
    options = experiment.run_options(experiment.parse_args(TINY))
    assert experiment.finished_run(out / "leaky", options) is not None
    assert experiment.finished_run(out / "leaky", {**options, "epochs": 2}) is None
    assert "epochs" in capsys.readouterr().out


def test_identical_curves_are_labelled(finished):
    out, _, _ = finished
    rows = experiment.read_curves(out / "leaky")
    other = [{**r, "metrics/mAP_0.5": r["metrics/mAP_0.5"] + 1} for r in rows]
    labels = experiment.same_curve_labels({"swish": rows, "silu": rows, "mish": other})
    assert labels == {"swish": "swish", "silu": "silu (= swish)", "mish": "mish"}


def test_ratios_without_a_baseline_are_nan():
    rows = experiment.add_ratios([{"activation": "swish", **{m: 1.0 for m in experiment.METRICS}}])
    assert math.isnan(rows[0]["mAP_0.5_vs_leaky"])


def test_unknown_activation_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        experiment.parse_args(["--activations", "leaky,swishh"])
    assert e.value.code == 2 and "swishh" in capsys.readouterr().err


# ---- issue 13: rows resume mid-row, bad input is a one-line exit 2, --skip-bad ----------------------------------

ONE_ROW = ["--data", "shapes:n_train=8,n_val=4,img_size=64", "--img-size", "64", "--batch-size", "4",
           "--activations", "leaky", "--device", "cpu", "--workers", "0"]


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
