"""One row of an experiment: train a variant (through `yolo.train.run`), and the markers that let a rerun
skip a finished row or continue an interrupted one.

<out>/<variant>/experiment-row.json is written when a row starts and experiment.json when it finished; both
hold the row's identity (the experiment's options and the variant's definition): a rerun reuses a row only
when it matches, so changing --epochs or a variant's meaning retrains instead of mixing results.
"""
import json
import time
from pathlib import Path
from typing import Optional

import yaml

from .variants import Variant

# Options that define a run: a finished run is reused only if all of these (and the variant) match.
RUN_OPTIONS = ("data", "cfg", "epochs", "img_size", "batch_size", "device", "seed", "hyp", "optimizer", "skip_bad",
               "sync_bn")
MARKER = "experiment.json"  # written into a row's run folder when its training finished
ROW_MARKER = "experiment-row.json"  # written when it starts: a rerun resumes the row only with the same identity
VARIANT_HYP = "variant-hyp.yaml"  # --hyp with the variant's hyperparameters on top, for variants that set some


def run_options(args) -> dict:
    return {k: getattr(args, k, None) for k in RUN_OPTIONS}


def row_identity(args, row: Variant) -> dict:
    """What a stored row must match to be reused: the experiment's run options and the variant's definition."""
    return {**run_options(args), "variant": row.definition()}


def finished_run(run_dir: Path, identity: dict) -> Optional[dict]:
    """The stored result of a finished row with this identity, else None (with the reason printed)."""
    marker = Path(run_dir) / MARKER
    if not marker.is_file():
        return None
    stored = json.loads(marker.read_text())
    if stored.get("options") != identity:
        old = stored.get("options", {})
        changed = sorted(k for k in identity if old.get(k) != identity[k])
        print(f"{run_dir}: finished with other options ({', '.join(changed)} differ); retraining")
        return None
    return stored["result"]


def resumable_row(run_dir: Path, identity: dict) -> Optional[Path]:
    """last.pt of a row that started with this identity and did not finish (a rerun continues it), else None."""
    marker, last = Path(run_dir) / ROW_MARKER, Path(run_dir) / "weights" / "last.pt"
    if not (marker.is_file() and last.is_file()):
        return None
    if json.loads(marker.read_text()).get("options") != identity:
        print(f"{run_dir}: an unfinished run with other options; restarting it")
        return None
    return last


def trainer_options(args, row: Variant, run_dir: Path, write: bool = True) -> dict:
    """yolo.train.run keywords of a fresh row: the experiment's options, the variant's on top. A variant with
    hyperparameters gets a hyp file in its run folder: the --hyp file's values with the variant's on top
    (written by rank 0 only, `write`, when several processes train the row)."""
    options = {k: v for k, v in run_options(args).items() if v is not None}
    options.update(row.options)
    if row.hyp:
        path = Path(run_dir) / VARIANT_HYP
        options["hyp"] = str(write_variant_hyp(args.hyp, row.hyp, path) if write else path)
    return options


def write_variant_hyp(base: Optional[str], overrides: dict, path: Path) -> Path:
    """Only the keys the --hyp file sets, plus the variant's: a key left out keeps the trainer's default
    (which for Adam's lr0 differs from SGD's). A bad --hyp file is an OptionError naming it."""
    from yolo.hyp import load_hyp
    from yolo.train_args import OptionError

    given = {}
    if base:
        try:
            load_hyp(base)  # every check the trainer makes, with the file named
        except (FileNotFoundError, ValueError) as e:
            raise OptionError(f"--hyp: {e}") from None
        given = yaml.safe_load(Path(base).read_text()) or {}
    path.write_text(yaml.safe_dump({**given, **overrides}, sort_keys=False))
    return path


def train_row(row: Variant, args, out: Path, progress, info=None) -> dict:
    """Train one variant (resuming its unfinished run); returns the trainer's summary dict, with time and
    memory over all the row's epochs (also those trained before an interruption). Under torchrun (`info`)
    every process trains the row with DDP and takes rank 0's decisions; only rank 0 writes files."""
    from yolo.train import run
    from yolo.utils import distributed as ddp
    from yolo.utils.checkpoint import load_checkpoint

    info = info or ddp.DistInfo()
    identity = row_identity(args, row)
    run_dir = out / row.name
    t0 = time.time()
    common = dict(workers=args.workers, cache_dir=args.cache_dir, verbose=args.verbose, callbacks=progress.callbacks())
    last = ddp.from_main(None if args.fresh else resumable_row(run_dir, identity), info)
    if not info.is_main:
        if last is not None:
            finished = load_checkpoint(last)["epoch"] + 1 >= args.epochs
            return {} if finished else run(resume=str(last), epochs=args.epochs, **common)
        ddp.barrier(info)  # rank 0 writes the row's marker and hyp file first
        return run(**trainer_options(args, row, run_dir, write=False), project=str(out), name=row.name,
                   exist_ok=True, **common)
    if last is not None:
        done = load_checkpoint(last)["epoch"] + 1
        progress.say(f"resuming {last}: {done} of {args.epochs} epochs were done")
        if done < args.epochs:
            result = run(resume=str(last), epochs=args.epochs, **common)
        else:  # killed after its final checkpoint, before the row was marked finished
            result = result_from_run(run_dir, row.name, args)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ROW_MARKER).write_text(json.dumps({"options": identity, "variant": row.name}, indent=1))
        options = trainer_options(args, row, run_dir)
        ddp.barrier(info)
        result = run(**options, project=str(out), name=row.name, exist_ok=True, **common)
    rows = read_curves(run_dir)
    result["time_per_epoch_s"] = sum(r["epoch_time_s"] for r in rows) / len(rows)
    result["peak_mem_mb"] = max(r["peak_mem_mb"] for r in rows)
    result["wall_s"] = time.time() - t0  # training and evaluation, for the summary's total
    marker = {"options": identity, "result": result, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    (Path(result["save_dir"]) / MARKER).write_text(json.dumps(marker, indent=1))
    return result


def result_from_run(run_dir: Path, name: str, args) -> dict:
    """The summary a finished run would have returned, from its results.csv (for a row whose last epoch was
    saved but whose process died before it was marked finished)."""
    from yolo.utils.torch_utils import select_device

    last = read_curves(run_dir)[-1]
    out = {k: last[f"metrics/{k}"] for k in ("precision", "recall", "mAP_0.5", "mAP_0.5:0.95")}
    out.update(save_dir=str(run_dir), variant=name, device=str(select_device(args.device)))
    return out


def read_curves(run_dir: Path) -> list:
    """The row's results.csv: one dict per epoch."""
    from yolo.utils.results import read_results

    return read_results(Path(run_dir) / "results.csv")
