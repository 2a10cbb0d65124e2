"""The seed's activation experiment: `python -m yolo.experiment` (`make experiment`).

Trains one model per activation with the same seed, data and schedule (through `yolo.train.run`) and writes
to --out (default runs/experiment/):
  summary.csv, summary.md     per activation: final train loss, mAP@0.5, mAP@0.5:0.95, time per epoch and
                              memory, each also relative to leaky
  results_activations.png     losses, precision, recall and mAP per epoch, one line per activation
  <activation>/               each training run (results.csv, opt.yaml, weights, ...)

The default is sized for a 2-core CPU (yolov3-tiny on 256 generated `shapes` images at 128 px, 8 epochs):
a few minutes per activation, so it shows the method and the memory/time differences, not converged mAPs.
Scale it up with --data/--cfg/--epochs/--img-size/--batch-size/--device, e.g. the seed's COCO run:
  python -m yolo.experiment --data coco.yaml --cfg yolov3 --img-size 320 --batch-size 64 --epochs 27 --device 0

Memory: on CUDA the trainer's peak allocated memory; on a CPU, where peak RSS says little about activations,
the bytes autograd saves for backward in one training batch (benchmarks/memory.py, exact, fp32).
Finished activations are skipped when the command is run again with the same options (--fresh retrains);
an activation interrupted mid-run (Ctrl-C, kill -9, a bad image) continues from its last finished epoch.
"""
import argparse
import csv
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

DEFAULT_ACTIVATIONS = ("leaky", "swish", "swish-me", "swish-naive", "silu", "mish", "prelu", "swish-fused",
                       "swish-fused-recompute")
# Rows beyond yolo.activations: our Swish with BatchNorm fused into it (the trainer's --fuse-bn options).
VARIANTS = {
    "swish-fused": dict(activation="swish", fuse_bn=True),
    "swish-fused-recompute": dict(activation="swish", fuse_bn_recompute=True),
}
DEFAULTS = dict(
    data="shapes:n_train=256,n_val=64,img_size=128", cfg="yolov3-tiny", epochs=8, img_size=128,
    batch_size=16, device="", seed=0, workers=0, out="runs/experiment",
)
# Options that define a run: a finished run is reused only if all of these match.
RUN_OPTIONS = ("data", "cfg", "epochs", "img_size", "batch_size", "device", "seed", "hyp", "optimizer", "skip_bad")
# Values of options added since markers were first written, so older markers still match.
OPTION_DEFAULTS = {"skip_bad": False}
MARKER = "experiment.json"  # written into an activation's run folder when its training finished
ROW_MARKER = "experiment-row.json"  # written when it starts: a rerun resumes the row only with the same options
BASELINE = "leaky"
PROG = "python -m yolo.experiment"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    D = DEFAULTS
    p.add_argument("--activations", default=",".join(DEFAULT_ACTIVATIONS),
                   help=f"comma list of yolo.activations names [{','.join(DEFAULT_ACTIVATIONS)}]")
    p.add_argument("--data", default=D["data"], help=f"'shapes[:k=v,...]' or a data YAML [{D['data']}]")
    p.add_argument("--cfg", default=D["cfg"], help=f"[{D['cfg']}]")
    p.add_argument("--epochs", type=int, default=D["epochs"], help=f"[{D['epochs']}]")
    p.add_argument("--img-size", type=int, default=D["img_size"], help=f"[{D['img_size']}]")
    p.add_argument("--batch-size", type=int, default=D["batch_size"], help=f"[{D['batch_size']}]")
    p.add_argument("--device", default=D["device"], help="cpu, cuda, cuda:N or N [cuda if available]")
    p.add_argument("--seed", type=int, default=D["seed"], help=f"[{D['seed']}]")
    p.add_argument("--hyp", help="hyperparameter YAML for every run")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None)
    p.add_argument("--workers", type=int, default=D["workers"], help=f"DataLoader workers [{D['workers']}]")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU: torch threads [1: on a shared machine extra threads mostly wait for the scheduler]")
    p.add_argument("--cache-dir", help="folder for generated datasets [~/.cache/swishkernels]")
    p.add_argument("--out", default=D["out"], help=f"output folder [{D['out']}]")
    p.add_argument("--fresh", action="store_true", help="retrain activations that already finished in --out")
    p.add_argument("--skip-bad", action="store_true", help="skip bad images/labels with a warning (the trainer's)")
    p.add_argument("--verbose", action="store_true", help="the trainer's own progress bars and epoch lines")
    args = p.parse_args(argv)
    args.activations = [a.strip() for a in args.activations.split(",") if a.strip()]
    if not args.activations:
        p.error("--activations is empty")
    from yolo.activations import ACTIVATIONS

    valid = (*ACTIVATIONS, *VARIANTS)
    unknown = [a for a in args.activations if a not in valid]
    if unknown:
        p.error(f"unknown activation(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return args


def run_options(args):
    return {k: getattr(args, k, None) for k in RUN_OPTIONS}


# ---- progress -----------------------------------------------------------------------------------------------

def fmt_duration(seconds):
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Prints which activation (i/N), which epoch and batch, and the ETA from the mean wall time per epoch
    (training plus evaluation) of the epochs finished so far in this invocation."""

    BATCH_EVERY_S = 20  # a batch line at most this often, so slow CPU epochs still show signs of life

    def __init__(self, to_train, epochs):
        self.to_train, self.epochs = to_train, epochs
        self.epoch_seconds = []
        self.index, self.name, self.t_epoch, self.t_print = 0, "", 0.0, 0.0
        self.start = time.time()

    def begin(self, index, name):
        self.index, self.name = index, name
        self.t_epoch = self.t_print = time.time()
        self.remaining_runs = self.to_train - index  # not counting this one
        self.say(f"training ({self.epochs} epochs); ETA all {fmt_duration(self.eta(self.epochs)[1])}")

    def eta(self, epochs_left_here):
        """(seconds left in this run, seconds left in all runs), None before the first epoch ends."""
        if not self.epoch_seconds:
            return None, None
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        return mean * epochs_left_here, mean * (epochs_left_here + self.remaining_runs * self.epochs)

    def say(self, message):
        print(f"[{self.index}/{self.to_train} {self.name}] {message}", flush=True)

    def on_train_batch_end(self, epoch, batch, loss_items):
        now = time.time()
        if now - self.t_print >= self.BATCH_EVERY_S:
            self.t_print = now
            self.say(f"epoch {epoch + 1}/{self.epochs} batch {batch + 1}, loss {float(loss_items[3]):.3g}")

    def on_epoch_end(self, epoch, row):
        now = time.time()
        self.epoch_seconds.append(now - self.t_epoch)
        self.t_epoch = self.t_print = now
        this_run, everything = self.eta(self.epochs - epoch - 1)
        loss = sum(row[f"train/{k}_loss"] for k in ("box", "obj", "cls"))
        self.say(f"epoch {epoch + 1}/{self.epochs}: train loss {loss:.4g}, mAP@0.5 {row['metrics/mAP_0.5']:.4f}, "
                 f"{self.epoch_seconds[-1]:.0f} s; ETA this run {fmt_duration(this_run)}, "
                 f"all {fmt_duration(everything)}")

    def callbacks(self):
        return {"on_train_batch_end": self.on_train_batch_end, "on_epoch_end": self.on_epoch_end}


# ---- one run ------------------------------------------------------------------------------------------------

def finished_run(run_dir, options):
    """The stored result of a finished run with these options, else None (with the reason printed)."""
    marker = run_dir / MARKER
    if not marker.is_file():
        return None
    stored = json.loads(marker.read_text())
    stored_options = {**OPTION_DEFAULTS, **stored.get("options", {})}
    if stored_options != options:
        changed = sorted(k for k in options if stored_options.get(k) != options[k])
        print(f"{run_dir}: finished with other options ({', '.join(changed)} differ); retraining")
        return None
    return stored["result"]


def resumable_row(run_dir, options, activation):
    """last.pt of a row that started with these options and did not finish (a rerun continues it), else None."""
    marker, last = run_dir / ROW_MARKER, run_dir / "weights" / "last.pt"
    if not (marker.is_file() and last.is_file()):
        return None
    stored = json.loads(marker.read_text())
    if {**OPTION_DEFAULTS, **stored.get("options", {})} != options or stored.get("activation") != activation:
        print(f"{run_dir}: an unfinished run with other options; restarting it")
        return None
    return last


def train_one(activation, args, out, progress):
    """Train one activation (resuming its unfinished run); returns the trainer's summary dict, with time
    and memory over all the row's epochs (also those trained before an interruption)."""
    from yolo.train import run
    from yolo.utils.checkpoint import load_checkpoint

    options = run_options(args)
    run_dir = out / activation
    t0 = time.time()
    common = dict(workers=args.workers, cache_dir=args.cache_dir, verbose=args.verbose, callbacks=progress.callbacks())
    last = None if args.fresh else resumable_row(run_dir, options, activation)
    if last is not None:
        done = load_checkpoint(last)["epoch"] + 1
        progress.say(f"resuming {last}: {done} of {args.epochs} epochs were done")
        if done < args.epochs:
            result = run(resume=str(last), epochs=args.epochs, **common)
        else:  # killed after its final checkpoint, before the row was marked finished
            result = result_from_run(run_dir, activation, args)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ROW_MARKER).write_text(json.dumps({"options": options, "activation": activation}, indent=1))
        model_options = VARIANTS.get(activation, {"activation": activation})
        result = run(**{k: v for k, v in options.items() if v is not None}, **model_options, project=str(out),
                     name=activation, exist_ok=True, **common)
    rows = read_curves(run_dir)
    result["time_per_epoch_s"] = sum(r["epoch_time_s"] for r in rows) / len(rows)
    result["peak_mem_mb"] = max(r["peak_mem_mb"] for r in rows)
    result["wall_s"] = time.time() - t0  # training and evaluation, for the summary's total
    marker = {"options": options, "result": result, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    (Path(result["save_dir"]) / MARKER).write_text(json.dumps(marker, indent=1))
    return result


def result_from_run(run_dir, activation, args):
    """The summary a finished run would have returned, from its results.csv (for a row whose last epoch was
    saved but whose process died before it was marked finished)."""
    from yolo.utils.torch_utils import select_device

    last = read_curves(run_dir)[-1]
    out = {k: last[f"metrics/{k}"] for k in ("precision", "recall", "mAP_0.5", "mAP_0.5:0.95")}
    out.update(save_dir=str(run_dir), activation=activation, device=str(select_device(args.device)))
    return out


# ---- memory of the model, independent of the machine -----------------------------------------------------

def load_memory_module():
    """benchmarks/memory.py of this checkout (benchmarks/ is not an installed package), or None."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("swishkernels_benchmarks_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def saved_activation_mb(args, activation, num_classes):
    """MB autograd saves for backward in one training batch (fp32), on the CPU (exact, device-independent)."""
    memory = load_memory_module()
    if memory is None:
        return float("nan")
    return memory.darknet_saved(args.cfg, args.img_size, args.batch_size, activation, num_classes).mib


# ---- summary ------------------------------------------------------------------------------------------------

def read_curves(run_dir):
    from yolo.utils.results import read_results

    return read_results(Path(run_dir) / "results.csv")


def summary_row(activation, result, run_dir, saved_mb):
    rows = read_curves(run_dir)
    last = rows[-1]
    train_loss = sum(last[f"train/{k}_loss"] for k in ("box", "obj", "cls"))
    return {
        "activation": activation,
        "train_loss": train_loss,
        "mAP_0.5": result.get("mAP_0.5", float("nan")),
        "mAP_0.5:0.95": result.get("mAP_0.5:0.95", float("nan")),
        "time_per_epoch_s": result["time_per_epoch_s"],
        "peak_mem_mb": result["peak_mem_mb"],
        "saved_act_mb": saved_mb,
        "device": result["device"],
        "epochs": len(rows),
    }


METRICS = ("train_loss", "mAP_0.5", "mAP_0.5:0.95", "time_per_epoch_s", "peak_mem_mb", "saved_act_mb")


def add_ratios(rows):
    """`<metric>_vs_leaky` for every metric (NaN without a leaky row)."""
    base = next((r for r in rows if r["activation"] == BASELINE), None)
    for r in rows:
        for m in METRICS:
            b = base[m] if base else float("nan")
            r[f"{m}_vs_{BASELINE}"] = r[m] / b if b and math.isfinite(b) and math.isfinite(r[m]) else float("nan")
    return rows


def write_csv(rows, path):
    columns = ["activation", *[c for m in METRICS for c in (m, f"{m}_vs_{BASELINE}")], "device", "epochs"]
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


def memory_column(rows):
    """GPU runs report the trainer's peak allocated memory; CPU runs the exact saved-activation bytes."""
    gpu = any(str(r["device"]).startswith("cuda") for r in rows)
    return ("peak_mem_mb", "peak GPU memory (MB)") if gpu else ("saved_act_mb", "saved activations (MB)")


def write_markdown(rows, path, args, machine_line, train_wall_s, wall_s):
    mem_key, mem_title = memory_column(rows)
    lines = [
        f"# Activation experiment: {args.cfg} on {args.data}",
        "",
        f"{len(rows)} activations, same seed ({args.seed}), data and schedule: {args.epochs} epochs, "
        f"img {args.img_size}, batch {args.batch_size}. Machine: {machine_line}. Wall time: "
        f"{fmt_duration(train_wall_s)} training and evaluating all runs, {fmt_duration(wall_s)} this invocation. "
        f"Ratios are against {BASELINE} (LeakyReLU(0.1, inplace=True), the seed's baseline).",
        "",
        f"| activation | final train loss | mAP@0.5 | mAP@0.5:0.95 | time/epoch (s) | {mem_title} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['activation']} | {_with_ratio(r, 'train_loss', 3)} | {_with_ratio(r, 'mAP_0.5', 4)} | "
                     f"{_with_ratio(r, 'mAP_0.5:0.95', 4)} | {_with_ratio(r, 'time_per_epoch_s', 1)} | "
                     f"{_with_ratio(r, mem_key, 1)} |")
    if mem_key == "saved_act_mb":
        lines += ["", f"Memory: bytes autograd saves for backward in one batch of {args.batch_size} at "
                  f"{args.img_size} px (fp32, exact, from benchmarks/memory.py); peak process RSS per epoch is in "
                  "summary.csv (peak_mem_mb) but includes everything else the process holds."]
    lines += ["", "Time per epoch is training only (evaluation excluded).", "",
              "![mAP and losses per epoch](results_activations.png)", ""]
    Path(path).write_text("\n".join(lines))


RESULT_CURVES = ("train/box_loss", "train/obj_loss", "train/cls_loss", "val/box_loss", "val/obj_loss", "val/cls_loss",
                 "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95")
PANELS = (("train loss (box+obj+cls)", ("train/box_loss", "train/obj_loss", "train/cls_loss")),
          ("val loss (box+obj+cls)", ("val/box_loss", "val/obj_loss", "val/cls_loss")),
          ("precision", ("metrics/precision",)), ("recall", ("metrics/recall",)),
          ("mAP@0.5", ("metrics/mAP_0.5",)), ("mAP@0.5:0.95", ("metrics/mAP_0.5:0.95",)))


def same_curve_labels(curves):
    """Legend labels; an activation whose every value equals an earlier one's (the same math in another
    implementation, e.g. silu and our swish) says so, since its line is hidden under the other."""
    labels, seen = {}, {}
    for activation, rows in curves.items():
        key = tuple(tuple(repr(r[c]) for c in RESULT_CURVES) for r in rows)  # repr: NaN equals NaN
        labels[activation] = f"{activation} (= {seen[key]})" if key in seen else activation
        seen.setdefault(key, activation)
    return labels


def plot_curves(curves, path, title):
    """One figure, one line per activation in every panel (like the seed's results_activations.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    markers, dashes = ("o", "s", "^", "v", "D", "x", "+", "*"), ("-", "--", ":", "-.")
    styles = [dict(marker=markers[i % len(markers)], linestyle=dashes[i % len(dashes)]) for i in range(len(curves))]
    labels = same_curve_labels(curves)
    for ax, (panel, columns) in zip(axes.ravel(), PANELS):
        for (activation, rows), style in zip(curves.items(), styles):
            points = [(r["epoch"] + 1, sum(r[c] for c in columns)) for r in rows]
            points = [(e, v) for e, v in points if math.isfinite(v)]  # epochs not evaluated are skipped
            if points:
                ax.plot(*zip(*points), markersize=4, fillstyle="none", label=labels[activation], **style)
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the command --------------------------------------------------------------------------------------------

def machine_line(device):
    import os
    import platform

    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), torch {torch.__version__}"


def main(argv=None):
    args = parse_args(argv)
    import torch

    from yolo.utils.torch_utils import select_device

    t0 = time.time()
    try:
        device = select_device(args.device)
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    if device.type == "cpu" or args.threads:
        torch.set_num_threads(args.threads or 1)
    try:
        return run_experiment(args, device, t0)
    finally:
        torch.set_num_threads(threads)  # callers in the same process (tests) get their setting back


def run_experiment(args, device, t0):
    from yolo.data import DataError, load_data_config
    from yolo.train_args import OptionError

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = run_options(args)

    done = {}
    if not args.fresh:
        for a in args.activations:
            stored = finished_run(out / a, options)
            if stored is not None:
                done[a] = stored
                print(f"skipping {a}: already finished in {out / a} (--fresh retrains)")
    todo = [a for a in args.activations if a not in done]
    print(f"{PROG}: {len(todo)} to train ({', '.join(todo) or 'none'}), {args.cfg}, {args.data}, {args.epochs} epochs, "
          f"img {args.img_size}, batch {args.batch_size}, device {device}, -> {out}", flush=True)
    progress = Progress(len(todo), args.epochs)
    for i, activation in enumerate(todo, 1):
        progress.begin(i, activation)
        try:
            done[activation] = train_one(activation, args, out, progress)
        except (OptionError, DataError) as e:
            hint = ""
            if isinstance(e, DataError):  # found while training: the epochs saved so far are kept
                hint = ("" if args.skip_bad else " (fix the file or pass --skip-bad)") + \
                    "; rerunning continues from the last finished epoch"
            print(f"{PROG}: error: {activation}: {e}{hint}", file=sys.stderr)
            return 2
        except FloatingPointError as e:  # training diverged
            print(f"{PROG}: error: {activation}: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted in {activation}; run the same command again to continue it from its last "
                  "finished epoch", file=sys.stderr)
            return 130
        progress.say(f"done: mAP@0.5 {done[activation].get('mAP_0.5', float('nan')):.4f}, "
                     f"{done[activation]['time_per_epoch_s']:.1f} s/epoch")

    num_classes = load_data_config(args.data, cache_dir=args.cache_dir)["nc"]
    rows, curves = [], {}
    for a in args.activations:
        print(f"saved-activation memory of {a} ({args.cfg}, batch {args.batch_size}, {args.img_size} px)...",
              flush=True)
        rows.append(summary_row(a, done[a], out / a, saved_activation_mb(args, a, num_classes)))
        curves[a] = read_curves(out / a)  # not the stored save_dir: --out may have been moved since
    add_ratios(rows)
    write_csv(rows, out / "summary.csv")
    train_wall = sum(done[a].get("wall_s", float("nan")) for a in args.activations)
    write_markdown(rows, out / "summary.md", args, machine_line(device), train_wall, time.time() - t0)
    plot_curves(curves, out / "results_activations.png",
                f"{args.cfg}, {args.data}, {args.epochs} epochs, img {args.img_size}, batch {args.batch_size}")
    print((out / "summary.md").read_text())
    print(f"wrote {out / 'summary.csv'}, {out / 'summary.md'}, {out / 'results_activations.png'} "
          f"in {fmt_duration(time.time() - t0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
