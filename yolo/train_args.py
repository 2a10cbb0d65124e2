"""Options of `python -m yolo.train` and of `yolo.train.run(**kwargs)`: one table of defaults, one parser,
one validation, so the CLI and the programmatic API cannot drift apart.

The defaults serve `python -m yolo.train --data shapes --cfg yolov3-tiny --device cpu`: mAP@0.5 >= 0.5 on
the generated val split within 15 minutes on a 2-core CPU. That budget is a few thousand images' worth of
steps, which is why the defaults are Adam (it moves as far per step however small the gradient) at 192 px
(1.8x the images per second of 256 px); `--optimizer sgd --img-size 416` is the Ultralytics GPU recipe."""
import argparse
import math
import sys
from pathlib import Path

from yolo.utils.checkpoint import check_resumable, load_checkpoint, resumable_checkpoints

PROG = "python -m yolo.train"
MAX_STRIDE = 32  # image sizes must be a multiple of the coarsest YOLO head's stride

DEFAULTS = {
    "data": "shapes",  # built-in generated dataset, or a data YAML
    "cfg": "yolov3-tiny",  # bundled cfg name or a .cfg path
    "hyp": None,  # hyperparameter YAML overriding yolo.hyp.DEFAULT_HYP
    "weights": None,  # initial weights: a .pt (trainer checkpoint or state_dict) or Darknet .weights
    "weights_cutoff": None,  # Darknet .weights: load layers < N only (default: N from a '*.conv.N' name)
    "activation": None,  # overrides the cfg's activation (see yolo.activations.ACTIVATIONS)
    "fuse_bn": False,  # BatchNorm2d + Swish/SiLU -> swishkernels.BatchNormSwish2d (saves only the block input)
    "fuse_bn_recompute": False,  # and the next layer recomputes the block output instead of keeping it
    "sync_bn": False,  # under torchrun: BatchNorm statistics over all processes (fused: SyncBatchNormSwish2d)
    "scale_xy": None,  # box-centre sigmoid stretch of every [yolo] (None: the cfg's scale_x_y, else 1)
    "head_bias": None,  # initial objectness/class logits (None: priors; the seed thread's row 9 uses -5)
    "epochs": 20,
    "batch_size": 16,  # total over all DDP processes
    "accumulate": None,  # None: round(64 / batch_size), i.e. a nominal batch of 64 images
    "img_size": 192,
    "device": "",  # '' = cuda when available, else cpu
    "optimizer": "adam",  # lr: ADAM_LR0 in yolo.train unless --hyp sets lr0; "sgd" uses hyp lr0 (0.01)
    "amp": None,  # None: on for CUDA, off for CPU
    "workers": 0,
    "seed": 0,
    "deterministic": False,  # cuDNN deterministic algorithms (slower); CPU runs are deterministic anyway
    "project": "runs/train",
    "name": "exp",
    "exist_ok": False,
    "resume": False,  # False, True (latest last.pt under --project) or a checkpoint path
    "nosave": False,  # only write the final checkpoint
    "notest": False,  # only evaluate after the final epoch
    "eval_interval": 1,  # evaluate every N epochs (the final epoch always)
    "skip_bad": False,  # skip unreadable images / invalid labels with a warning instead of failing
    "cache_dir": None,  # where generated datasets are written (default ~/.cache/swishkernels)
    "verbose": True,  # progress bar and per-epoch lines; False keeps stdout quiet for experiment runners
}

# Options that may change when resuming; anything else comes from the checkpoint so training continues as it
# was (epochs may grow: the cosine schedule depends on it, so changing it changes the rest of the run).
RESUME_OVERRIDABLE = {
    "epochs", "device", "workers", "verbose", "notest", "eval_interval", "nosave", "cache_dir", "resume",
}


class OptionError(ValueError):
    """A bad option value; the CLI prints the message on one line and exits with status 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block, exit status 2 (argparse's convention)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser():
    """The CLI parser. Defaults are suppressed so the result holds only what the user typed; the table above
    fills in the rest (and resume needs to know what was typed)."""
    p = OneLineParser(prog=PROG, description="Train a Darknet YOLOv3 model.", argument_default=argparse.SUPPRESS)
    D = DEFAULTS
    p.add_argument("--data", help="'shapes' (generated; 'shapes:n_train=..,n_val=..,img_size=..') or a data YAML "
                   f"[{D['data']}]")
    p.add_argument("--cfg", help=f"bundled cfg name (yolov3, yolov3-tiny, yolov3-spp) or a .cfg path [{D['cfg']}]")
    p.add_argument("--hyp", help="hyperparameter YAML (keys of yolo.hyp.DEFAULT_HYP)")
    p.add_argument("--weights", help="start from these weights: a .pt (last.pt, best.pt or a state_dict) or a "
                   "Darknet .weights file (e.g. darknet53.conv.74); heads are re-initialized when the class count "
                   "differs")
    p.add_argument("--weights-cutoff", type=int, help="Darknet .weights: load only layers < N [N of a *.conv.N name]")
    p.add_argument("--activation", help="override the cfg's activation: leaky, swish, swish-me, silu, mish, prelu, ...")
    p.add_argument("--fuse-bn", action="store_true",
                   help="fuse each BatchNorm2d + Swish/SiLU into swishkernels.BatchNormSwish2d (with --activation "
                   "swish or silu): Swish in LeakyReLU(inplace)'s memory")
    p.add_argument("--fuse-bn-recompute", action="store_true",
                   help="--fuse-bn, and the layer after each fused block recomputes its output in backward "
                   "instead of keeping it (less memory, one more elementwise pass)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun, BatchNorm statistics over the batches of all processes: fused layers "
                   "become swishkernels.SyncBatchNormSwish2d (CPU and GPU), others nn.SyncBatchNorm (GPU only)")
    p.add_argument("--scale-xy", type=float, help="box centre = scale * sigmoid(t) - (scale - 1) / 2 in every [yolo] "
                   "(the seed thread tried 1.1, 1.2, 1.5) [the cfg's scale_x_y, else 1]")
    p.add_argument("--head-bias", type=float, help="initialize every objectness and class bias to this value "
                   "(the seed thread's -5) [priors: ~8 objects per 640-px image, class probability 0.6/nc]")
    p.add_argument("--epochs", type=int, help=f"[{D['epochs']}]")
    p.add_argument("--batch-size", type=int, help=f"total batch size (all GPUs) [{D['batch_size']}]")
    p.add_argument("--accumulate", type=int, help="batches per optimizer step [round(64 / batch-size)]")
    p.add_argument("--img-size", type=int, help=f"train and val image size, a multiple of 32 [{D['img_size']}]")
    p.add_argument("--device", help="cpu, cuda, cuda:N or N [cuda if available]")
    p.add_argument("--optimizer", choices=["sgd", "adam"], help=f"[{D['optimizer']}]")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="mixed precision [on for CUDA, off for CPU]")
    p.add_argument("--workers", type=int, help=f"DataLoader worker processes [{D['workers']}]")
    p.add_argument("--seed", type=int, help=f"[{D['seed']}]")
    p.add_argument("--deterministic", action="store_true", help="deterministic cuDNN algorithms (slower)")
    p.add_argument("--project", help=f"runs are saved to project/name [{D['project']}]")
    p.add_argument("--name", help=f"run folder name, incremented (exp2, exp3...) [{D['name']}]")
    p.add_argument("--exist-ok", action="store_true", help="reuse project/name instead of incrementing")
    p.add_argument("--resume", nargs="?", const=True, help="continue a run: a last.pt, or the latest under --project")
    p.add_argument("--nosave", action="store_true", help="only save the final checkpoint")
    p.add_argument("--notest", action="store_true", help="only evaluate after the final epoch")
    p.add_argument("--eval-interval", type=int, help="evaluate every N epochs [1]")
    p.add_argument("--skip-bad", action="store_true", help="skip bad images/labels with a warning")
    p.add_argument("--cache-dir", help="folder for generated datasets [~/.cache/swishkernels]")
    p.add_argument("--verbose", action=argparse.BooleanOptionalAction, help="progress bar and epoch lines [on]")
    return p


def parse_explicit(argv=None):
    """CLI arguments -> dict of the options the user actually gave."""
    return vars(build_parser().parse_args(argv))


def merge_options(explicit):
    """DEFAULTS updated with `explicit`; an unknown name is an OptionError listing the valid ones."""
    unknown = sorted(set(explicit) - set(DEFAULTS))
    if unknown:
        raise OptionError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(DEFAULTS))}")
    opt = argparse.Namespace(**DEFAULTS)
    for key, value in explicit.items():
        setattr(opt, key, value)
    return opt


def check_basic(opt):
    """Cheap value checks, made before any data is read or model built (so errors come fast)."""
    if opt.weights_cutoff is not None and (not isinstance(opt.weights_cutoff, int) or opt.weights_cutoff < 1):
        raise OptionError(f"--weights-cutoff must be an integer >= 1, got {opt.weights_cutoff!r}")
    if opt.weights is not None and not opt.resume and not Path(str(opt.weights)).is_file():
        raise OptionError(f"--weights: file not found: {opt.weights}")
    for key, low in (("epochs", 1), ("batch_size", 1), ("img_size", 32), ("workers", 0), ("eval_interval", 1)):
        value = getattr(opt, key)
        if not isinstance(value, int) or value < low:
            raise OptionError(f"--{key.replace('_', '-')} must be an integer >= {low}, got {value!r}")
    if opt.accumulate is not None and (not isinstance(opt.accumulate, int) or opt.accumulate < 1):
        raise OptionError(f"--accumulate must be an integer >= 1, got {opt.accumulate!r}")
    for key, low in (("scale_xy", 0), ("head_bias", -math.inf)):  # model knobs: finite numbers (scale_xy > 0)
        value = getattr(opt, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not low < value < math.inf):
            raise OptionError(f"--{key.replace('_', '-')} must be a finite number > {low:g}, got {value!r}")
    if str(opt.optimizer).lower() not in ("sgd", "adam"):
        raise OptionError(f"unknown optimizer {opt.optimizer!r}: use sgd or adam")
    opt.optimizer = opt.optimizer.lower()
    opt.fuse_bn = bool(opt.fuse_bn or opt.fuse_bn_recompute)
    if opt.activation is not None:
        from yolo.activations import ACTIVATIONS

        if opt.activation not in ACTIVATIONS:
            raise OptionError(f"unknown activation {opt.activation!r}; valid: {', '.join(ACTIVATIONS)}")
    from yolo.cfg_parser import resolve_cfg

    try:
        resolve_cfg(opt.cfg)
    except FileNotFoundError as e:
        raise OptionError(str(e)) from None


def resolve_options(explicit):
    """User options -> (complete options Namespace, checkpoint to resume or None), all values checked.

    On resume the options come from the checkpoint (so the run continues as it was configured); only
    RESUME_OVERRIDABLE ones (epochs, device, workers, ...) may be changed."""
    ckpt = None
    if explicit.get("resume"):
        path = explicit["resume"]
        if path is True:
            path = pick_resume(explicit.get("project", DEFAULTS["project"]))
        try:
            ckpt = load_checkpoint(path)
            check_resumable(ckpt, path)
        except (FileNotFoundError, ValueError) as e:
            raise OptionError(f"--resume: {e}") from None
        saved = dict(ckpt["opt"])
        fixed = set(explicit) - RESUME_OVERRIDABLE - {"project"}  # project only says where to look
        ignored = sorted(k for k in fixed if explicit[k] != saved.get(k))
        if ignored:
            warn(f"resuming {path}: ignoring {', '.join(ignored)} (taken from the checkpoint)")
        saved.update({k: v for k, v in explicit.items() if k in RESUME_OVERRIDABLE})
        saved["resume"] = str(Path(path).resolve())
        opt = merge_options({k: v for k, v in saved.items() if k in DEFAULTS})
        done = ckpt["epoch"] + 1
        if done >= opt.epochs:
            raise OptionError(f"--resume: {path} already trained {done} of {opt.epochs} epochs; "
                              f"pass --epochs > {done} to train longer")
    else:
        opt = merge_options(explicit)
    check_basic(opt)
    if opt.img_size % MAX_STRIDE:
        size = math.ceil(opt.img_size / MAX_STRIDE) * MAX_STRIDE
        warn(f"--img-size {opt.img_size} is not a multiple of {MAX_STRIDE}; using {size}")
        opt.img_size = size
    # Paths the run depends on are stored absolute, so --resume works from any directory.
    for key in ("hyp", "cache_dir", "project", "weights"):
        if getattr(opt, key):
            setattr(opt, key, str(Path(getattr(opt, key)).expanduser().resolve()))
    if Path(str(opt.cfg)).suffix == ".cfg":
        opt.cfg = str(Path(opt.cfg).expanduser().resolve())
    if not str(opt.data).startswith("shapes") and Path(str(opt.data)).suffix in (".yaml", ".yml", ".data"):
        opt.data = str(Path(opt.data).expanduser().resolve())
    return opt, ckpt


def pick_resume(project):
    """The checkpoint a bare --resume continues: the one unfinished run under `project`, said aloud; with
    none or several, an OptionError asking for the path (never a silent pick of some other run)."""
    candidates = resumable_checkpoints(project)
    if not candidates:
        raise OptionError(f"--resume: no unfinished run (a last.pt with epochs left) under {project!r}; "
                          "give the checkpoint path")
    if len(candidates) > 1:
        listed = ", ".join(f"{p} ({done}/{planned} epochs)" for p, done, planned in candidates[:5])
        raise OptionError(f"--resume: {len(candidates)} unfinished runs under {project!r}: {listed}; "
                          "give the path of the one to continue")
    path, done, planned = candidates[0]
    warn(f"--resume: continuing {path} ({done} of {planned} epochs done), the only unfinished run under {project}")
    return path


def warn(message):
    print(f"WARNING: {message}", file=sys.stderr)
