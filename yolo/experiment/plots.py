"""The experiment's figure: losses, precision, recall and mAP per epoch, one line per variant."""
import math
from typing import Dict

FIGURE = "results_activations.png"  # the seed thread's name for it

RESULT_CURVES = ("train/box_loss", "train/obj_loss", "train/cls_loss", "val/box_loss", "val/obj_loss", "val/cls_loss",
                 "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95")
PANELS = (("train loss (box+obj+cls)", ("train/box_loss", "train/obj_loss", "train/cls_loss")),
          ("val loss (box+obj+cls)", ("val/box_loss", "val/obj_loss", "val/cls_loss")),
          ("precision", ("metrics/precision",)), ("recall", ("metrics/recall",)),
          ("mAP@0.5", ("metrics/mAP_0.5",)), ("mAP@0.5:0.95", ("metrics/mAP_0.5:0.95",)))


def same_curve_labels(curves: Dict[str, list]) -> Dict[str, str]:
    """Legend labels; a variant whose every value equals an earlier one's (the same math in another
    implementation, e.g. silu and our swish) says so, since its line is hidden under the other."""
    labels, seen = {}, {}
    for name, rows in curves.items():
        key = tuple(tuple(repr(r[c]) for c in RESULT_CURVES) for r in rows)  # repr: NaN equals NaN
        labels[name] = f"{name} (= {seen[key]})" if key in seen else name
        seen.setdefault(key, name)
    return labels


def plot_curves(curves: Dict[str, list], path, title: str) -> None:
    """One figure, one line per variant in every panel (like the seed's results_activations.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    markers, dashes = ("o", "s", "^", "v", "D", "x", "+", "*"), ("-", "--", ":", "-.")
    styles = [dict(marker=markers[i % len(markers)], linestyle=dashes[i % len(dashes)]) for i in range(len(curves))]
    labels = same_curve_labels(curves)
    for ax, (panel, columns) in zip(axes.ravel(), PANELS):
        for (name, rows), style in zip(curves.items(), styles):
            points = [(r["epoch"] + 1, sum(r[c] for c in columns)) for r in rows]
            points = [(e, v) for e, v in points if math.isfinite(v)]  # epochs not evaluated are skipped
            if points:
                ax.plot(*zip(*points), markersize=4, fillstyle="none", label=labels[name], **style)
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8 if len(curves) <= 9 else 6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
