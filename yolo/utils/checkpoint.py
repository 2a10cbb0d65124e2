"""Checkpoints: written atomically (temporary file, then os.replace) so an interrupt or a crash during the
write leaves the previous last.pt/best.pt intact, and read back with weights_only=True (plain containers and
tensors only, nothing pickled that could run code)."""
import glob
import os
from pathlib import Path

import torch


def save_checkpoint(ckpt, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)  # atomic on POSIX and Windows
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path, map_location="cpu"):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None


def latest_checkpoint(search_dir="runs/train", name="last.pt"):
    """The most recently written `name` under search_dir (what a bare --resume continues), or None."""
    found = glob.glob(os.path.join(str(search_dir), "**", name), recursive=True)
    return Path(max(found, key=os.path.getmtime)) if found else None


def load_model(path, device="cpu", use_ema=True):
    """A Darknet in eval mode from a trainer checkpoint (the EMA weights unless use_ema=False)."""
    from yolo.models import Darknet

    ckpt = load_checkpoint(path)
    model = Darknet(ckpt["cfg"], num_classes=ckpt["nc"], activation=ckpt.get("activation"))
    weights = ckpt["ema"]["model"] if use_ema or "model" not in ckpt else ckpt["model"]  # best.pt: EMA only
    model.load_state_dict(weights)
    model.names = ckpt.get("names")
    return model.to(device).eval()
