"""The seed's experiment: `python -m yolo.experiment` (`make experiment`): one model per variant, same data.

Trains one model per variant (activation, box loss, init, optimizer, cfg, ...) with the same seed, data and
schedule (through `yolo.train.run`) and writes to --out (default runs/experiment/):
  summary.csv, summary.md     per variant: final train loss, mAP@0.5, mAP@0.5:0.95, time per epoch and
                              memory, each also relative to leaky (the seed thread's baseline)
  results_activations.png     losses, precision, recall and mAP per epoch, one line per variant
  <variant>/                  each training run (results.csv, opt.yaml, weights, ...)

--variants (default `activations`: leaky, swish, swish-me, swish-naive, silu, mish, prelu, swish-fused,
swish-fused-recompute) is a comma list of variant names and groups:
  leaky, swish, prelu, prelu1, ...    an activation of yolo.activations (prelu: one slope per channel, init
                                      0.1; prelu1: one per layer, init 0.25, as nn.PReLU(num_parameters=1))
  swish-fused[-recompute]             our Swish with BatchNorm fused (--fuse-bn[-recompute])
  scale_xy=F                          box centre scale * sigmoid(t) - (scale - 1) / 2 in every head
  giou2                               squared GIoU box loss ((1 - giou) ** 2).mean()
  pan                                 the yolov3-spp-pan cfg (YOLOv3-SPP + a PANet bottom-up path)
  biasV, e.g. bias-5                  objectness and class biases start at V
  adamLR / sgdLR, e.g. adam9e-5       that optimizer at initial lr LR
  seed                                the seed thread's rows: leaky, swish, prelu, prelu1, scale_xy=1.2,
                                      scale_xy=1.1, scale_xy=1.5, giou2, pan, bias-5, adam9e-5, swish-me,
                                      swish-fused, swish-fused-recompute; its row 11 "Adam uFBCE 8192" is not
                                      defined in the thread, so it is left out
Rows other than pan use --cfg, rows other than adamLR/sgdLR use --optimizer and --hyp.

The default is sized for a 2-core CPU (yolov3-tiny on 256 generated `shapes` images at 128 px, 8 epochs):
a few minutes per variant, so it shows the method and the memory/time differences, not converged mAPs.
Scale it up with --data/--cfg/--epochs/--img-size/--batch-size/--device, e.g. the seed thread's COCO run (its
rows used SGD and yolov3-spp, whose neck the pan row extends):
  python -m yolo.experiment --variants seed --data coco.yaml --cfg yolov3-spp --optimizer sgd --img-size 320 \\
      --batch-size 64 --epochs 27 --device 0

Memory: on CUDA the trainer's peak allocated memory; on a CPU, where peak RSS says little about activations,
the bytes autograd saves for backward in one training batch (yolo.memory, exact, fp32).
Finished variants are skipped when the command is run again with the same options (--fresh retrains);
a variant interrupted mid-run (Ctrl-C, kill -9, a bad image) continues from its last finished epoch.

Several processes (GPUs, or CPU processes with gloo): start it under torchrun and every row trains with DDP
over all of them (--sync-bn: BatchNorm statistics over the global batch; --batch-size is the global batch);
rank 0 alone writes the markers, the summary and the figure:
  torchrun --standalone --nproc_per_node 2 -m yolo.experiment --variants swish-fused,swish-fused-recompute --sync-bn
"""
import argparse
import contextlib
import io
import sys
import time
from pathlib import Path
from typing import List, Optional

from .memory import saved_activation_mb
from .plots import FIGURE, plot_curves
from .progress import Progress, fmt_duration
from .runs import finished_run, read_curves, row_identity, train_row
from .summary import add_ratios, summary_row, write_csv, write_markdown
from .variants import DEFAULT, parse_variants

DEFAULTS = dict(
    data="shapes:n_train=256,n_val=64,img_size=128", cfg="yolov3-tiny", epochs=8, img_size=128,
    batch_size=16, device="", seed=0, workers=0, out="runs/experiment",
)
PROG = "python -m yolo.experiment"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    D = DEFAULTS
    p.add_argument("--variants", default=DEFAULT, help=f"comma list of variants and groups (below) [{DEFAULT}]")
    p.add_argument("--data", default=D["data"], help=f"'shapes[:k=v,...]' or a data YAML [{D['data']}]")
    p.add_argument("--cfg", default=D["cfg"], help=f"[{D['cfg']}]")
    p.add_argument("--epochs", type=int, default=D["epochs"], help=f"[{D['epochs']}]")
    p.add_argument("--img-size", type=int, default=D["img_size"], help=f"[{D['img_size']}]")
    p.add_argument("--batch-size", type=int, default=D["batch_size"], help=f"[{D['batch_size']}]")
    p.add_argument("--device", default=D["device"], help="cpu, cuda, cuda:N or N [cuda if available]")
    p.add_argument("--seed", type=int, default=D["seed"], help=f"[{D['seed']}]")
    p.add_argument("--hyp", help="hyperparameter YAML for every run")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None, help="[the trainer's: adam]")
    p.add_argument("--workers", type=int, default=D["workers"], help=f"DataLoader workers [{D['workers']}]")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU: torch threads [1: on a shared machine extra threads mostly wait for the scheduler]")
    p.add_argument("--cache-dir", help="folder for generated datasets [~/.cache/swishkernels]")
    p.add_argument("--out", default=D["out"], help=f"output folder [{D['out']}]")
    p.add_argument("--fresh", action="store_true", help="retrain variants that already finished in --out")
    p.add_argument("--skip-bad", action="store_true", help="skip bad images/labels with a warning (the trainer's)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: synchronized BatchNorm in every row (the trainer's --sync-bn)")
    p.add_argument("--verbose", action="store_true", help="the trainer's own progress bars and epoch lines")
    args = p.parse_args(argv)
    try:
        args.rows = parse_variants(args.variants)
    except ValueError as e:
        p.error(f"--variants: {e}")
    return args


def machine_line(device) -> str:
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


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry. Exit status: 0 done, 1 a row diverged, 2 bad options or data (one line), 130 interrupted."""
    args = parse_args(argv)
    import torch

    from yolo.utils import distributed as ddp
    from yolo.utils.torch_utils import select_device

    t0 = time.time()
    info = ddp.dist_info_from_env()  # under torchrun: every row trains over all processes
    try:
        device = select_device(args.device, info.local_rank)
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    if device.type == "cpu" or args.threads:
        torch.set_num_threads(args.threads or 1)
    ddp.init_distributed(info, device)  # once, so each row's yolo.train.run joins this group
    try:
        with contextlib.nullcontext() if info.is_main else contextlib.redirect_stdout(io.StringIO()):
            return run_experiment(args, device, t0, info)
    finally:
        ddp.cleanup_distributed(info)
        torch.set_num_threads(threads)  # callers in the same process (tests) get their setting back


def run_experiment(args, device, t0: float, info) -> int:
    from yolo.data import DataError, load_data_config
    from yolo.train_args import OptionError
    from yolo.utils.errors import error_line, report

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only or full --out: one line, like the trainer's own file-system errors
        return report(PROG, e)
    done = {}
    if not args.fresh:
        for row in args.rows:
            stored = finished_run(out / row.name, row_identity(args, row))
            if stored is not None:
                done[row.name] = stored
                print(f"skipping {row.name}: already finished in {out / row.name} (--fresh retrains)")
    todo = [row for row in args.rows if row.name not in done]
    print(f"{PROG}: {len(todo)} to train ({', '.join(r.name for r in todo) or 'none'}), {args.cfg}, {args.data}, "
          f"{args.epochs} epochs, img {args.img_size}, batch {args.batch_size}, device {device}, -> {out}", flush=True)
    progress = Progress(len(todo), args.epochs)
    for i, row in enumerate(todo, 1):
        progress.begin(i, row.name)
        try:
            done[row.name] = train_row(row, args, out, progress, info)
        except (OptionError, DataError) as e:
            hint = ""
            if isinstance(e, DataError):  # found while training: the epochs saved so far are kept
                hint = ("" if args.skip_bad else " (fix the file or pass --skip-bad)") + \
                    "; rerunning continues from the last finished epoch"
            print(f"{PROG}: error: {row.name}: {e}{hint}", file=sys.stderr)
            return 2
        except OSError as e:  # disk full, read-only folder: the epochs saved so far are kept
            print(f"{PROG}: error: {row.name}: {error_line(e)}; rerunning continues from the last finished epoch",
                  file=sys.stderr)
            return 2
        except FloatingPointError as e:  # training diverged
            print(f"{PROG}: error: {row.name}: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted in {row.name}; run the same command again to continue it from its last "
                  "finished epoch", file=sys.stderr)
            return 130
        if not info.is_main:
            continue  # rank 0 reports and writes the summary
        progress.say(f"done: mAP@0.5 {done[row.name].get('mAP_0.5', float('nan')):.4f}, "
                     f"{done[row.name]['time_per_epoch_s']:.1f} s/epoch")
    if info.is_main:
        write_summary(args, device, out, done, t0, load_data_config(args.data, cache_dir=args.cache_dir)["nc"])
    return 0


def write_summary(args, device, out: Path, done: dict, t0: float, num_classes: int) -> None:
    rows, curves, memory_cache = [], {}, {}
    for row in args.rows:
        print(f"saved-activation memory of {row.name} (batch {args.batch_size}, {args.img_size} px)...", flush=True)
        curves[row.name] = read_curves(out / row.name)  # not the stored save_dir: --out may have been moved since
        saved_mb = saved_activation_mb(args, row, num_classes, memory_cache)
        rows.append(summary_row(row.name, done[row.name], curves[row.name], saved_mb))
    add_ratios(rows)
    write_csv(rows, out / "summary.csv")
    train_wall = sum(done[r.name].get("wall_s", float("nan")) for r in args.rows)
    write_markdown(rows, out / "summary.md", args, args.rows, machine_line(device), train_wall, time.time() - t0)
    plot_curves(curves, out / FIGURE,
                f"{args.cfg}, {args.data}, {args.epochs} epochs, img {args.img_size}, batch {args.batch_size}")
    print((out / "summary.md").read_text())
    print(f"wrote {out / 'summary.csv'}, {out / 'summary.md'}, {out / FIGURE} in {fmt_duration(time.time() - t0)}")
