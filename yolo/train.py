"""Train a Darknet YOLOv3 model: `python -m yolo.train --data shapes --cfg yolov3-tiny --device cpu`.

The 2019-2020 Ultralytics recipe: SGD (nesterov) or Adam with weight decay on conv weights only, linear
warmup then a cosine schedule, gradient accumulation to a nominal batch of 64 images, AMP on CUDA, an EMA of
the weights (what is evaluated and kept as best.pt), torchrun DDP, atomic last.pt/best.pt every epoch and
`--resume` that continues exactly where a run stopped, `--weights` to start from a .pt or Darknet .weights
file (yolo.weights). Each run writes to runs/train/exp{,2,3...}:
results.csv, results.png, opt.yaml, hyp.yaml, weights/{last,best}.pt and pictures of labels and predictions.

Programmatic use (one call per experiment): `yolo.train.run(cfg="yolov3-tiny", activation="swish",
epochs=3, verbose=False)` returns a dict of final metrics, time per epoch, peak memory and the run folder.
"""
import argparse
import math
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
import yaml

from swishkernels import fuse_bn_swish, recompute_bn_swish
from yolo.train_args import PROG, OptionError, parse_explicit, resolve_options
from yolo.utils import distributed as ddp
from yolo.utils.checkpoint import remove_stale_temporaries, save_checkpoint
from yolo.utils.ema import ModelEMA
from yolo.utils.optim import (
    build_optimizer,
    default_accumulate,
    scaled_weight_decay,
    set_learning_rates,
    warmup_iterations,
)
from yolo.utils.plots import draw_mosaic, plot_results, targets_to_boxes
from yolo.utils.results import ResultsWriter, fitness, make_row
from yolo.utils.run_dir import claim_run_dir
from yolo.utils.torch_utils import DeviceError, PeakMemory, derive_seed, init_seeds, select_device

PLOT_CONF = 0.25  # confidence threshold for the predictions drawn on val images
ADAM_LR0 = 0.004  # Adam's initial lr when the --hyp file does not set lr0 (tuned on shapes: 1e-3..4e-3)


def run(callbacks: Optional[Dict[str, Callable]] = None, **options: Any) -> Dict[str, Any]:
    """Train with `options` (the CLI's long names with underscores, e.g. batch_size=16); see train()."""
    return train(options, callbacks=callbacks)


def train(opt: Union[None, dict, argparse.Namespace] = None, callbacks: Optional[Dict[str, Callable]] = None,
          **options: Any) -> Dict[str, Any]:
    """Train and return a dict: final val metrics, best fitness, run folder, checkpoints, per-epoch times and
    peak memory. `opt` is a dict or argparse.Namespace of options; keyword options are merged on top.

    callbacks: optional {event: fn} with events 'on_train_batch_end' (fn(epoch=, batch=, loss_items=)) and
    'on_epoch_end' (fn(epoch=, row=)); used by tests and by callers that want to watch progress.

    Raises OptionError (bad options or data config, message names the value), yolo.data.DataError (bad data
    files), KeyboardInterrupt (after saying how to resume)."""
    explicit = dict(vars(opt) if hasattr(opt, "__dict__") else (opt or {}))
    explicit.update(options)
    opt, ckpt = resolve_options(explicit)
    info = ddp.dist_info_from_env()
    try:
        device = select_device(opt.device, info.local_rank)
    except DeviceError as e:
        raise OptionError(str(e)) from None
    check_backend_env(device)
    created_group = info.enabled and not torch.distributed.is_initialized()
    ddp.init_distributed(info, device)
    try:
        return Trainer(opt, info, device, ckpt, callbacks or {}).fit()
    finally:
        if created_group:
            ddp.cleanup_distributed(info)


def check_backend_env(device: torch.device) -> None:
    """$SWISHKERNELS_BACKEND, when set, must name a backend that runs on `device`: checked here, before the
    run folder is made, not at the first batch."""
    from swishkernels.backends import ENV_VAR, requested, resolve

    name = requested(None)
    if name:
        try:
            resolve(None, device)
        except (ValueError, RuntimeError) as e:
            raise OptionError(f"${ENV_VAR}={name}: {e}") from None


def load_run_hyp(path, optimizer):
    """yolo.hyp.DEFAULT_HYP with the --hyp file on top. Its lr0 (0.01) is SGD's: Adam takes ADAM_LR0
    unless the file sets lr0 (Ultralytics kept one lr0 per optimizer the same way: SGD=1E-2, Adam=1E-3)."""
    from yolo.hyp import load_hyp

    try:
        hyp = dict(load_hyp(path))
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise OptionError(f"--hyp: {e}") from None
    given = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    if optimizer == "adam" and "lr0" not in given:
        hyp["lr0"] = ADAM_LR0
    return hyp


def check_finite_weights(epoch: int, models: "dict[str, torch.nn.Module]") -> None:
    """FloatingPointError if a model holds NaN or inf (a diverged step), before anything is evaluated or saved."""
    for what, model in models.items():
        bad = sum(int((~torch.isfinite(t)).sum()) for t in model.state_dict().values() if t.is_floating_point())
        if bad:
            raise FloatingPointError(f"training diverged in epoch {epoch}: {bad} non-finite values in the {what}; "
                                     "lower lr0 or raise warmup_epochs (--hyp), or check the data")


def check_finite_metrics(epoch: int, metrics: dict) -> None:
    losses = {k: metrics[k] for k in ("box_loss", "obj_loss", "cls_loss") if k in metrics}
    if not all(math.isfinite(float(v)) for v in losses.values()):
        raise FloatingPointError(f"training diverged in epoch {epoch}: validation losses {losses}; lower lr0 or "
                                 "raise warmup_epochs (--hyp), or check the data")


class Trainer:
    """One training run. Only the main process (rank 0, or the only one) logs, evaluates and writes files."""

    def __init__(self, opt, info, device, ckpt, callbacks):
        self.opt, self.info, self.device, self.ckpt, self.callbacks = opt, info, device, ckpt, callbacks
        self.main = info.is_main
        self.verbose = opt.verbose and self.main
        self.amp = device.type == "cuda" if opt.amp is None else bool(opt.amp)
        self.amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self):
        # A resumed run keeps the hyperparameters it started with, even if the --hyp file changed since.
        hyp = dict(self.ckpt["hyp"]) if self.ckpt is not None else load_run_hyp(self.opt.hyp, self.opt.optimizer)
        self.hyp_file = dict(hyp)  # before the batch-size scaling of weight decay (saved to hyp.yaml)
        data = self.load_data()
        self.build_model_and_optimizer(hyp)
        rows = self.restore(self.ckpt) if self.ckpt is not None else []
        self.ddp_model = ddp.wrap_ddp(self.model, self.info, self.device)
        self.build_loaders(data)
        if self.main:
            self.setup_run_dir(rows)

    def load_data(self):
        from yolo.data import load_data_config
        from yolo.data.errors import DataError

        with self.main_first():  # rank 0 generates/caches the dataset, the others then read it
            try:
                data = load_data_config(self.opt.data, cache_dir=self.opt.cache_dir)
            except (DataError, FileNotFoundError, ValueError) as e:
                raise OptionError(f"--data {self.opt.data!r}: {e}") from None
        self.names, self.nc = list(data["names"]), int(data["nc"])
        if self.ckpt is not None and (self.nc, self.names) != (self.ckpt["nc"], list(self.ckpt.get("names") or
                                                                                   self.names)):
            raise OptionError(f"--resume: {self.opt.resume} was trained on {self.ckpt['nc']} classes but "
                              f"{self.opt.data} now has {self.nc} ({', '.join(self.names[:5])}"
                              f"{', ...' if self.nc > 5 else ''}); resume with the data it started with, or start a "
                              f"new run from these weights with --weights {self.opt.resume}")
        return data

    def build_model_and_optimizer(self, hyp):
        from yolo.models import Darknet

        opt, info = self.opt, self.info
        init_seeds(opt.seed, opt.deterministic)  # same initial weights in every process and every resume
        from yolo.cfg_parser import CfgError

        try:
            model = Darknet(opt.cfg, num_classes=self.nc, activation=opt.activation, scale_xy=opt.scale_xy,
                            head_bias=opt.head_bias)
        except (FileNotFoundError, CfgError) as e:
            raise OptionError(f"--cfg: {e}") from None
        if opt.weights and self.ckpt is None:  # a resumed run restores its own weights
            self.load_initial_weights(model)
        if opt.fuse_bn and not fuse_bn_swish(model, recompute=opt.fuse_bn_recompute).fused:
            raise OptionError(f"--fuse-bn: {opt.cfg} with activation {model.activation_name!r} has no BatchNorm2d "
                              "followed by Swish/SiLU; add --activation swish (or silu)")
        if opt.sync_bn:
            try:
                model = ddp.sync_batch_norm(model, info, self.device)
            except ValueError as e:
                raise OptionError(f"--sync-bn: {e}") from None
        self.model = model.to(self.device)
        if opt.batch_size % info.world_size:
            raise OptionError(f"--batch-size {opt.batch_size} must be a multiple of the {info.world_size} processes")
        self.batch_size = opt.batch_size // info.world_size  # per process
        self.accumulate = opt.accumulate or default_accumulate(opt.batch_size)
        hyp["weight_decay"] = scaled_weight_decay(hyp["weight_decay"], opt.batch_size, self.accumulate)
        self.hyp = hyp
        self.optimizer = build_optimizer(self.model, opt.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp and self.device.type == "cuda")
        self.ema = ModelEMA(self.model) if self.main else None
        self.start_epoch, self.best_fitness = 0, -1.0
        self.saved_epoch = None  # the epoch last.pt holds

    def load_initial_weights(self, model):
        from yolo.darknet_weights import WeightsError
        from yolo.weights import load_into

        try:
            report = load_into(model, self.opt.weights, self.opt.weights_cutoff)
        except (WeightsError, FileNotFoundError, ValueError) as e:
            raise OptionError(f"--weights: {e}") from None
        self.say(f"{PROG}: {report}")

    def build_loaders(self, data):
        from yolo.data import create_dataloader

        opt, info = self.opt, self.info
        common = dict(names=self.names, img_size=opt.img_size, hyp=self.hyp, workers=opt.workers, skip_bad=opt.skip_bad)
        with self.main_first():
            self.train_loader, self.train_dataset = create_dataloader(
                data["train"], batch_size=self.batch_size, augment=True, shuffle=True, rank=info.rank,
                world_size=info.world_size, seed=opt.seed, **common)
        if self.main:  # only rank 0 evaluates
            # Decoded in full up front: a truncated val image must fail now, not after the first epoch.
            self.val_loader, self.val_dataset = create_dataloader(
                data["val"], batch_size=opt.batch_size, augment=False, shuffle=False, decode=True, **common)

    def restore(self, ckpt):
        """Load everything a checkpoint holds, so the next epoch is the one an uninterrupted run would do."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"] and self.scaler.is_enabled():  # empty when saved without AMP (e.g. on a CPU)
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.start_epoch = ckpt["epoch"] + 1
        self.saved_epoch = ckpt["epoch"]
        self.best_fitness = ckpt["best_fitness"]
        return ckpt["results"]

    def setup_run_dir(self, rows):
        opt = self.opt
        if self.ckpt is not None:
            self.save_dir = Path(opt.resume).parent.parent  # <run>/weights/last.pt
        else:  # chosen and created in one step, so two runs starting together cannot share it
            self.save_dir = claim_run_dir(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
        self.weights_dir = self.save_dir / "weights"
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        self.last, self.best = self.weights_dir / "last.pt", self.weights_dir / "best.pt"
        for path in (self.last, self.best):  # left by a writer killed during a save
            for tmp in remove_stale_temporaries(path):
                self.say(f"{PROG}: removed {tmp}, left by an interrupted checkpoint write")
        with open(self.save_dir / "opt.yaml", "w") as f:
            yaml.safe_dump(vars(opt), f, sort_keys=False)
        with open(self.save_dir / "hyp.yaml", "w") as f:
            yaml.safe_dump(self.hyp_file, f, sort_keys=False)
        self.results = ResultsWriter(self.save_dir / "results.csv", rows)

    @contextmanager
    def main_first(self):
        """Run the block on rank 0 first and on the other ranks after it (e.g. to build a cache once)."""
        if not self.main:
            ddp.barrier(self.info)
        yield
        if self.main:
            ddp.barrier(self.info)

    # ------------------------------------------------------------------------------------------- training
    def fit(self):
        self.setup()
        opt = self.opt
        self.nb = len(self.train_loader)
        self.n_warmup = warmup_iterations(self.hyp["warmup_epochs"], self.nb)
        self.epoch_times, self.peak_mems, self.metrics = [], [], None
        self.memory = PeakMemory(self.device)
        if self.verbose:
            print(f"{PROG}: {self.describe()}")
        epoch, failed = self.start_epoch, True
        try:
            for epoch in range(self.start_epoch, opt.epochs):
                self.train_epoch(epoch)
                if self.main:
                    self.end_epoch(epoch)
            failed = False
        except KeyboardInterrupt:
            if self.main:
                self.report_interrupt(epoch)
            raise
        except FloatingPointError as e:  # diverged: say which checkpoint is still good
            raise FloatingPointError(f"{e}; {self.kept()}") from None
        finally:
            if self.main and self.results.rows:
                try:
                    plot_results(self.results.path, self.save_dir / "results.png")
                except Exception:
                    if not failed:
                        raise
                    # the error that stopped the run (a full disk, say) is the one to report, not this one
        if self.main:
            self.draw_samples()
        ddp.barrier(self.info)
        return self.summary() if self.main else {"rank": self.info.rank}

    def train_epoch(self, epoch):
        from tqdm import tqdm

        from yolo.loss import compute_loss

        opt, model, optimizer = self.opt, self.ddp_model, self.optimizer
        self.seed_epoch(epoch)
        model.train()
        self.memory.reset()
        t0 = time.time()
        mloss = torch.zeros(4)
        pending = 0  # batches whose gradients are waiting for an optimizer step
        optimizer.zero_grad(set_to_none=True)
        if self.verbose:
            print(("\n" + "%10s" * 8) % ("Epoch", "mem", "box", "obj", "cls", "total", "targets", "img_size"))
        pbar = tqdm(self.train_loader, total=self.nb, disable=not self.verbose, bar_format="{l_bar}{bar:10}{r_bar}")
        for i, (imgs, targets, _) in enumerate(pbar):
            ni = i + self.nb * epoch  # global iteration: warmup and lr depend only on it and the epoch
            accumulate = set_learning_rates(optimizer, self.hyp, epoch, opt.epochs, ni, self.n_warmup, self.accumulate)
            imgs = imgs.to(self.device, non_blocking=True)
            targets = targets.to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp), self.recompute():
                outputs = model(imgs)
            loss, loss_items = compute_loss([o.float() for o in outputs], targets, self.model, self.hyp)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch} batch {i}: box/obj/cls/total = "
                                         f"{loss_items.tolist()}; lower lr0 or check the data")
            # compute_loss already scales by batch_size / 64 (so accumulated steps see the mean loss of 64
            # images); DDP averages gradients over processes, so multiply back by their number.
            step = pending + 1 >= accumulate or i == self.nb - 1  # the epoch's last batch always steps
            with nullcontext() if step or not self.info.enabled else model.no_sync():  # all-reduce once a step
                self.scaler.scale(loss * self.info.world_size).backward()
            pending += 1
            if step:  # no gradient is carried into the next epoch: every checkpoint is a clean restart point
                self.optimizer_step()
                pending = 0

            mloss = (mloss * i + loss_items.detach().cpu()) / (i + 1)
            if self.verbose:
                pbar.set_description(("%10s" * 2 + "%10.4g" * 6) % (
                    f"{epoch}/{opt.epochs - 1}", self.memory.label(), *mloss, targets.shape[0], imgs.shape[-1]))
            self.callback("on_train_batch_end", epoch=epoch, batch=i, loss_items=loss_items)
        pbar.close()
        self.train_loss = mloss
        self.epoch_time = time.time() - t0
        self.epoch_peak = self.memory.peak_mb()
        self.lr = optimizer.param_groups[0]["lr"]

    def optimizer_step(self):
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def seed_epoch(self, epoch):
        """Re-derive every random stream from (seed, rank, epoch): augmentation and shuffling of an epoch do
        not depend on what ran before it (evaluation, a resume), which makes --resume exact."""
        seed = derive_seed(self.opt.seed, max(self.info.rank, 0), epoch)
        init_seeds(seed, self.opt.deterministic)
        loader = self.train_loader
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for generator in (getattr(loader, "generator", None), getattr(loader.sampler, "generator", None)):
            if generator is not None:
                generator.manual_seed(seed)

    def end_epoch(self, epoch):
        opt = self.opt
        final = epoch + 1 == opt.epochs
        metrics = None
        check_finite_weights(epoch, {"weights": self.model, "EMA weights": self.ema.ema})
        if final or (not opt.notest and (epoch + 1) % opt.eval_interval == 0):
            metrics = self.evaluate()
            check_finite_metrics(epoch, metrics)
            self.metrics = metrics
        row = make_row(epoch, self.train_loss.tolist(), metrics, self.lr, self.epoch_time, self.epoch_peak)
        self.results.append(row)
        self.epoch_times.append(self.epoch_time)
        self.peak_mems.append(self.epoch_peak)
        is_best = False
        if metrics is not None:
            fi = fitness(metrics)
            is_best = fi > self.best_fitness
            self.best_fitness = max(fi, self.best_fitness)
            self.say(("%20s" + "%12.4g" * 4) % ("all", metrics["precision"], metrics["recall"],
                                                 metrics["mAP_0.5"], metrics["mAP_0.5:0.95"])
                     + f"   (P, R, mAP@0.5, mAP@0.5:0.95; train {self.epoch_time:.1f}s)")
        if final or not opt.nosave:
            ckpt = self.checkpoint(epoch)
            save_checkpoint(ckpt, self.last)
            self.saved_epoch = epoch
            if is_best:  # for inference only: the EMA weights, without what resuming needs (1/3 the size)
                inference_only = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scaler")}
                save_checkpoint(inference_only, self.best)
        self.callback("on_epoch_end", epoch=epoch, row=row)

    def evaluate(self):
        from yolo.evaluate import evaluate
        from yolo.loss import compute_loss

        def loss_fn(outputs, targets):
            return compute_loss(outputs, targets, self.ema.ema, self.hyp)[1]

        return evaluate(self.ema.ema, self.val_loader, self.val_dataset, self.device, loss_fn=loss_fn,
                        half=self.amp and self.device.type == "cuda", verbose=False)

    def checkpoint(self, epoch):
        """Everything needed to continue exactly (raw weights, optimizer, scaler, EMA, results) and to use the
        model (cfg, classes, activation). Plain containers and tensors only: loads with weights_only=True."""
        return {
            "epoch": epoch,
            "best_fitness": self.best_fitness,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "results": self.results.rows,
            "opt": vars(self.opt),
            "hyp": self.hyp_file,
            "cfg": self.opt.cfg,
            "nc": self.nc,
            "names": self.names,
            "activation": self.model.activation_name,
            "torch": str(torch.__version__),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }

    def kept(self):
        """What a stopped run leaves to resume from, for its error message."""
        if not self.main:
            return "rank 0 reports the checkpoint kept"
        if self.saved_epoch is None:
            return "no checkpoint was written"
        return f"{self.last} keeps epoch {self.saved_epoch}"

    # ------------------------------------------------------------------------------------------ reporting
    def draw_samples(self):
        """train_batch0.jpg (augmented inputs and labels), val_labels.jpg and val_predictions.jpg (EMA model)."""
        from yolo.boxes import non_max_suppression

        def draw_labels(imgs, targets, name):
            draw_mosaic(imgs, targets_to_boxes(targets, len(imgs), *imgs.shape[2:]), self.save_dir / name, self.names)

        imgs, targets, _ = next(iter(self.train_loader))
        draw_labels(imgs, targets, "train_batch0.jpg")
        imgs, targets, _ = next(iter(self.val_loader))
        draw_labels(imgs, targets, "val_labels.jpg")
        model = self.ema.ema.eval()
        with torch.no_grad():
            pred = model(imgs[:16].to(self.device))
        dets = non_max_suppression(pred.float(), PLOT_CONF, 0.6, 100)
        draw_mosaic(imgs, [d.cpu() for d in dets], self.save_dir / "val_predictions.jpg", self.names)

    def recompute(self):
        """Forward context: with --fuse-bn-recompute, layers after fused blocks keep recipes, not outputs."""
        return recompute_bn_swish() if self.opt.fuse_bn_recompute else nullcontext()

    def describe(self):
        opt = self.opt
        fused = ", BN fused" + (" + recompute" if opt.fuse_bn_recompute else "") if opt.fuse_bn else ""
        fused += ", BN synchronized" if opt.sync_bn and self.info.enabled else ""
        parts = [f"{opt.cfg} ({self.model.activation_name}{fused})", f"{self.nc} classes", f"device {self.device}",
                 f"batch {opt.batch_size} x accumulate {self.accumulate}", f"img {opt.img_size}",
                 f"{opt.optimizer}", f"amp {'on' if self.amp else 'off'}",
                 f"epochs {self.start_epoch}..{opt.epochs - 1}",
                 f"world size {self.info.world_size}", f"-> {self.save_dir}"]
        return ", ".join(parts)

    def report_interrupt(self, epoch):
        if self.saved_epoch is not None:
            print(f"\nInterrupted in epoch {epoch}; {self.last} holds epoch {self.saved_epoch}. Resume with:\n"
                  f"  {PROG} --resume {self.last}", file=sys.stderr)
        else:
            print(f"\nInterrupted in epoch {epoch} before any checkpoint was saved; nothing to resume.",
                  file=sys.stderr)

    def summary(self):
        m = self.metrics or {}
        out = {k: float(m[k]) for k in ("precision", "recall", "mAP_0.5", "mAP_0.5:0.95") if k in m}
        out.update({f"val/{k}": float(m[k]) for k in ("box_loss", "obj_loss", "cls_loss") if k in m})
        out.update(
            fitness=fitness(m) if m else None,
            best_fitness=self.best_fitness,
            train_loss=[float(x) for x in self.train_loss],  # box, obj, cls, total of the last epoch
            epochs=self.opt.epochs,
            epoch_times_s=list(self.epoch_times),
            time_per_epoch_s=sum(self.epoch_times) / max(len(self.epoch_times), 1),
            peak_mem_mb=max(self.peak_mems, default=float("nan")),
            activation=self.model.activation_name,
            device=str(self.device),
            world_size=self.info.world_size,
            save_dir=str(self.save_dir),
            last=str(self.last),
            best=str(self.best) if self.best.exists() else None,
        )
        self.say(f"Done: mAP@0.5 {out.get('mAP_0.5', float('nan')):.3f}, mAP@0.5:0.95 "
                 f"{out.get('mAP_0.5:0.95', float('nan')):.3f}; results in {self.save_dir}")
        return out

    def say(self, message):
        if self.verbose:
            print(message)

    def callback(self, event, **kwargs):
        fn = self.callbacks.get(event)
        if fn is not None:
            fn(**kwargs)


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry. Exit status: 0 done, 1 training diverged (one line; nothing non-finite is saved), 2 bad
    options, bad input data or a file-system error such as a full disk or a read-only folder (one line naming
    the value or file), 130 interrupted (last.pt kept, resume command printed)."""
    from yolo.data.errors import DataError
    from yolo.utils.errors import report

    explicit = parse_explicit(argv)  # argparse errors exit 2 itself
    try:
        train(explicit)
    except (OptionError, DataError, OSError) as e:
        return report(PROG, e)
    except FloatingPointError as e:  # training diverged
        report(PROG, e)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
