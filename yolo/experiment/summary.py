"""The experiment's summary: one row per variant (final train loss, mAP@0.5, mAP@0.5:0.95, time per epoch,
memory), each also as a ratio against the seed thread's baseline (leaky), written as summary.csv and .md."""
import csv
import math
from pathlib import Path
from typing import List, Tuple

from .plots import FIGURE
from .progress import fmt_duration
from .variants import BASELINE, Variant


def summary_row(name: str, result: dict, curves: list, saved_mb: float) -> dict:
    """A summary row from the trainer's result and the row's results.csv curves."""
    last = curves[-1]
    train_loss = sum(last[f"train/{k}_loss"] for k in ("box", "obj", "cls"))
    return {
        "variant": name,
        "train_loss": train_loss,
        "mAP_0.5": result.get("mAP_0.5", float("nan")),
        "mAP_0.5:0.95": result.get("mAP_0.5:0.95", float("nan")),
        "time_per_epoch_s": result["time_per_epoch_s"],
        "peak_mem_mb": result["peak_mem_mb"],
        "saved_act_mb": saved_mb,
        "device": result["device"],
        "epochs": len(curves),
    }


METRICS = ("train_loss", "mAP_0.5", "mAP_0.5:0.95", "time_per_epoch_s", "peak_mem_mb", "saved_act_mb")


def add_ratios(rows: List[dict]) -> List[dict]:
    """`<metric>_vs_leaky` for every metric (NaN without a leaky row)."""
    base = next((r for r in rows if r["variant"] == BASELINE), None)
    for r in rows:
        for m in METRICS:
            b = base[m] if base else float("nan")
            r[f"{m}_vs_{BASELINE}"] = r[m] / b if b and math.isfinite(b) and math.isfinite(r[m]) else float("nan")
    return rows


def write_csv(rows: List[dict], path) -> None:
    columns = ["variant", *[c for m in METRICS for c in (m, f"{m}_vs_{BASELINE}")], "device", "epochs"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _with_ratio(r, metric, digits):
    value, ratio = r[metric], r[f"{metric}_vs_{BASELINE}"]
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    return f"{text} ({ratio:.2f}x)" if math.isfinite(ratio) else text


def memory_column(rows: List[dict]) -> Tuple[str, str]:
    """GPU runs report the trainer's peak allocated memory; CPU runs the exact saved-activation bytes."""
    gpu = any(str(r["device"]).startswith("cuda") for r in rows)
    return ("peak_mem_mb", "peak GPU memory (MB)") if gpu else ("saved_act_mb", "saved activations (MB)")


def write_markdown(rows: List[dict], path, args, variants: List[Variant], machine_line: str, train_wall_s: float,
                   wall_s: float) -> None:
    mem_key, mem_title = memory_column(rows)
    lines = [
        f"# Experiment: {args.cfg} on {args.data}",
        "",
        f"{len(rows)} variants, same seed ({args.seed}), data and schedule: {args.epochs} epochs, "
        f"img {args.img_size}, batch {args.batch_size}. Machine: {machine_line}. Wall time: "
        f"{fmt_duration(train_wall_s)} training and evaluating all runs, {fmt_duration(wall_s)} this invocation. "
        f"Ratios are against {BASELINE} (LeakyReLU(0.1, inplace=True), the seed's baseline).",
        "",
        f"| variant | final train loss | mAP@0.5 | mAP@0.5:0.95 | time/epoch (s) | {mem_title} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {_with_ratio(r, 'train_loss', 3)} | {_with_ratio(r, 'mAP_0.5', 4)} | "
                     f"{_with_ratio(r, 'mAP_0.5:0.95', 4)} | {_with_ratio(r, 'time_per_epoch_s', 1)} | "
                     f"{_with_ratio(r, mem_key, 1)} |")
    if mem_key == "saved_act_mb":
        lines += ["", f"Memory: bytes autograd saves for backward in one batch of {args.batch_size} at "
                  f"{args.img_size} px (fp32, exact, yolo.memory: sk.saved_for_backward); peak process RSS per epoch "
                  "is in summary.csv (peak_mem_mb) but includes everything else the process holds."]
    lines += ["", "Time per epoch is training only (evaluation excluded). Variants (what each row changes; "
              f"the rest is the experiment's options: --cfg {args.cfg}, --optimizer {args.optimizer or 'default'}, "
              f"--hyp {args.hyp or 'default'}):", ""]
    lines += [f"- `{v.name}`: {v.about}" for v in variants]
    lines += ["", f"![mAP and losses per epoch]({FIGURE})", ""]
    Path(path).write_text("\n".join(lines))
