"""Device selection, seeding and memory accounting: the few places where the trainer touches the machine."""
import os
import random
import resource

import numpy as np
import torch


class DeviceError(ValueError):
    """A --device value that cannot be used on this machine (the message names the value)."""


def select_device(device=None, local_rank=-1):
    """Turn a user string ('', 'cpu', 'cuda', 'cuda:1', '0') into a torch.device that works here.

    '' or None picks CUDA when there is one, else the CPU. Under DDP (local_rank >= 0) on CUDA each process
    takes the GPU numbered by its local rank."""
    text = "" if device is None else str(device).strip().lower()
    if text == "":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text.isdigit():  # Ultralytics style: --device 0
        text = f"cuda:{text}"
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise DeviceError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but CUDA is not available on this machine (use --device cpu)")
    count = torch.cuda.device_count()
    index = local_rank if local_rank >= 0 else (dev.index or 0)
    if index >= count:
        raise DeviceError(f"device {device!r} requested but only {count} CUDA device(s) are visible")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def derive_seed(*parts):
    """A 32-bit seed that depends only on `parts` (e.g. base seed, rank, epoch)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def init_seeds(seed=0, deterministic=False):
    """Seed Python, NumPy and torch (all devices). `deterministic` also pins cuDNN algorithms (slower)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


class PeakMemory:
    """Peak memory of one stretch of work (an epoch), in MiB.

    CUDA: torch.cuda.max_memory_allocated (tensors only, comparable across activations).
    CPU: the process's peak resident set (VmHWM); Linux lets a process reset it via /proc/self/clear_refs,
    otherwise it is the peak since the process started."""

    def __init__(self, device):
        self.device = torch.device(device)

    def reset(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass

    def peak_mb(self):
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return cpu_peak_rss_mb()

    def label(self):
        """Short text for the progress bar: '1.23G' or '-' when unknown."""
        mb = self.peak_mb()
        return f"{mb / 1024:.3g}G" if mb == mb and mb > 0 else "-"


def cpu_peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    try:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    except (OSError, ValueError):
        return float("nan")


def de_parallel(model):
    """The plain model inside a DataParallel/DistributedDataParallel wrapper (or the model itself)."""
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default
