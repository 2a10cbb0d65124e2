"""Checkpoints: written atomically (temporary file, then os.replace) so an interrupt or a crash during the
write leaves the previous last.pt/best.pt intact, and read back with weights_only=True (plain containers and
tensors only, nothing pickled that could run code). Temporary files a killed writer left behind are removed
by the next save of the same checkpoint (and when a run starts or resumes)."""
import glob
import os
import re
from pathlib import Path
from typing import Union

import torch
import torch.nn as nn

# Keys without which a checkpoint cannot continue a run (best.pt keeps only the EMA weights for inference).
RESUME_KEYS = ("epoch", "model", "optimizer", "ema", "opt", "results")


def _temporary(path, pid):
    return path.with_name(f".{path.name}.tmp{pid}")


def save_checkpoint(ckpt, path):
    """Write `ckpt` to `path` atomically; OSError naming `path` if it cannot be written (e.g. a full disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary(path, os.getpid())
    try:
        # Through a Python file: a full disk is then an OSError (ENOSPC), not torch's "unexpected pos" RuntimeError.
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except OSError as e:
        raise OSError(e.errno, f"cannot write the checkpoint ({e.strerror or e}); the previous one is kept",
                      str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _pid_alive(pid):
    if pid == os.getpid():
        return False  # our own earlier attempt: nobody is writing it now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path):
    """Delete `.<name>.tmp<pid>` files beside `path` whose writer process is gone (a `kill -9` during a
    save leaves them: 0 B up to a full checkpoint). Returns the removed paths."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.tmp(\d+)$")
    removed = []
    if not path.parent.is_dir():
        return removed
    for p in path.parent.iterdir():
        m = pattern.match(p.name)
        if m and not _pid_alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


def load_checkpoint(path, map_location="cpu"):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"cannot read checkpoint {path}: empty file (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign file
        detail = str(e).strip().splitlines()[0] if str(e).strip() else "truncated, or not a torch checkpoint"
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {detail}") from None


def check_resumable(ckpt, path):
    """ValueError naming `path` unless `ckpt` (a loaded checkpoint) holds what --resume needs."""
    if not isinstance(ckpt, dict) or "epoch" not in ckpt:
        raise ValueError(f"{path} is not a trainer checkpoint (a bare state_dict?); resume from a run's "
                         "weights/last.pt, or start from it with --weights")
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path} holds weights for inference only (no {', '.join(missing)}: a best.pt?); "
                         f"resume from {Path(path).with_name('last.pt')}")


def resumable_checkpoints(search_dir="runs/train", name="last.pt"):
    """[(path, epochs done, epochs planned)] of every readable `name` under search_dir whose run has not
    trained all its epochs (what a bare --resume may continue), newest first."""
    found = sorted(glob.glob(os.path.join(str(search_dir), "**", name), recursive=True),
                   key=os.path.getmtime, reverse=True)
    out = []
    for p in found:
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            done, planned = ckpt["epoch"] + 1, int(ckpt["opt"]["epochs"])
        except Exception:  # unreadable or foreign: not a candidate
            continue
        if done < planned:
            out.append((Path(p), done, planned))
    return out


def latest_checkpoint(search_dir="runs/train", name="last.pt"):
    """The most recently written `name` under search_dir, or None."""
    found = glob.glob(os.path.join(str(search_dir), "**", name), recursive=True)
    return Path(max(found, key=os.path.getmtime)) if found else None


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu", use_ema: bool = True) -> nn.Module:
    """A Darknet in eval mode from a trainer checkpoint (the EMA weights unless use_ema=False)."""
    from yolo.models import Darknet

    ckpt = load_checkpoint(path)
    model = Darknet(ckpt["cfg"], num_classes=ckpt["nc"], activation=ckpt.get("activation"),
                    scale_xy=(ckpt.get("opt") or {}).get("scale_xy"))  # it decodes boxes: not in the weights
    weights = ckpt["ema"]["model"] if use_ema or "model" not in ckpt else ckpt["model"]  # best.pt: EMA only
    model.load_state_dict(weights)
    model.names = ckpt.get("names")
    return model.to(device).eval()
