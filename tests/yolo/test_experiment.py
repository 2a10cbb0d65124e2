"""`python -m yolo.experiment` at toy size (2 activations, 1 epoch, 8 generated 64-px images): the summary
files and figure, the ratios against leaky, skipping finished runs, and the option checks."""
import contextlib
import csv
import io
import math

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
