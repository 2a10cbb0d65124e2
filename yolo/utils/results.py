"""results.csv: one row per epoch, appended and flushed at once so a crash loses nothing already reported."""
import csv
import math
from pathlib import Path

RESULTS_COLUMNS = (
    "epoch",
    "train/box_loss", "train/obj_loss", "train/cls_loss",
    "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
    "val/box_loss", "val/obj_loss", "val/cls_loss",
    "lr", "epoch_time_s", "peak_mem_mb",
)


def fitness(metrics):
    """What best.pt maximises (Ultralytics): mostly mAP@0.5:0.95, a little mAP@0.5."""
    return 0.1 * metrics["mAP_0.5"] + 0.9 * metrics["mAP_0.5:0.95"]


def make_row(epoch, train_losses, metrics, lr, epoch_time_s, peak_mem_mb):
    """A results row as a dict; metrics=None (epoch not evaluated) gives NaN in the metric columns."""
    nan = float("nan")
    m = metrics or {}
    values = (
        epoch, *(float(x) for x in train_losses[:3]),
        m.get("precision", nan), m.get("recall", nan), m.get("mAP_0.5", nan), m.get("mAP_0.5:0.95", nan),
        m.get("box_loss", nan), m.get("obj_loss", nan), m.get("cls_loss", nan),
        lr, epoch_time_s, peak_mem_mb,
    )
    return dict(zip(RESULTS_COLUMNS, values))


def _format(value):
    if isinstance(value, int):
        return str(value)
    value = float(value)
    return "nan" if math.isnan(value) else f"{value:.6g}"


class ResultsWriter:
    """Writes results.csv. `rows` (e.g. from a checkpoint being resumed) are rewritten first, so the file
    always matches the checkpoint, even if the previous run died between writing a row and the checkpoint."""

    def __init__(self, path, rows=()):
        self.path = Path(path)
        self.rows = [dict(r) for r in rows]
        with open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(RESULTS_COLUMNS)
            for row in self.rows:
                writer.writerow([_format(row[c]) for c in RESULTS_COLUMNS])

    def append(self, row):
        self.rows.append(dict(row))
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_format(row[c]) for c in RESULTS_COLUMNS])
            f.flush()


def read_results(path):
    """results.csv back as a list of dicts of floats (epoch as int)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows]
