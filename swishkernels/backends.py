"""Which backend runs a call: availability, the reason when one cannot run, and the choice rule.

Rule (ARCHITECTURE.md, "Rules every layer keeps"): the `backend=` argument, else $SWISHKERNELS_BACKEND,
else the best available for the tensor's device. A name the user gave is never swapped for another: if it
cannot run here the call raises and says why.
"""
import importlib
import importlib.util
import os
from typing import List, Optional, Union

import torch

BACKENDS = ("triton", "cuda", "cpu", "reference")
ENV_VAR = "SWISHKERNELS_BACKEND"

# Best first, per device type. Triton leads on GPUs (its kernels are exercised by CI through the
# interpreter); under the interpreter it is far too slow to be chosen for CPU tensors automatically.
_PREFERENCE = {
    "cuda": ("triton", "cuda", "reference"),
    "cpu": ("cpu", "reference", "triton"),
}


def _load_extension() -> Optional[str]:
    """Load swishkernels._C (which registers the C++ ops); None on success, else why it failed."""
    if os.environ.get("SWISHKERNELS_SKIP_EXT") == "1":
        return "SWISHKERNELS_SKIP_EXT=1 is set, so the C++ extension swishkernels._C is not loaded"
    try:
        importlib.import_module("swishkernels._C")
    except ImportError as exc:
        return (f"the C++ extension swishkernels._C is not built ({exc}); reinstall with "
                f"`pip install --no-build-isolation -e .` and without SWISHKERNELS_SKIP_EXT=1")
    return None


def _find_triton() -> Optional[str]:
    # find_spec, not import: importing Triton costs about a second and is deferred to first use.
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed; `pip install triton` on a machine with a GPU"
    return None


# Probed once at import, so that choosing a backend is plain Python that torch.compile traces through.
EXTENSION_ERROR = _load_extension()
TRITON_ERROR = _find_triton()


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def extension_has_cuda() -> bool:
    return (EXTENSION_ERROR is None
            and torch._C._dispatch_has_kernel_for_dispatch_key("swishkernels::swish_forward", "CUDA"))


def unavailable_reason(backend: str, device_type: str) -> Optional[str]:
    """None if `backend` can run tensors of `device_type` here and now, else a sentence saying why not."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown swishkernels backend {backend!r}; known backends: {', '.join(BACKENDS)}")
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available to this process"
    if backend == "reference":
        return None
    if backend == "triton":
        if TRITON_ERROR:
            return TRITON_ERROR
        if device_type == "cpu" and not triton_interpreted():
            return ("Triton runs CPU tensors only in its interpreter: set TRITON_INTERPRET=1 before "
                    "swishkernels first uses Triton")
        if device_type not in ("cpu", "cuda"):
            return f"the triton backend does not run {device_type} tensors"
        return None
    if EXTENSION_ERROR:
        return EXTENSION_ERROR
    if backend == "cpu":
        return None if device_type == "cpu" else f"the cpu backend runs CPU tensors only, not {device_type}"
    if device_type != "cuda":
        return f"the cuda backend runs CUDA tensors only, not {device_type}"
    if not extension_has_cuda():
        return "swishkernels._C was built without CUDA kernels (torch without CUDA, or nvcc missing at build time)"
    return None


def check_runnable(backend: str, device_type: str, what: str) -> None:
    """A raw op of `backend` called on a tensor it cannot run says why in our words (not Triton's "0 active
    drivers" for a CPU tensor without the interpreter)."""
    reason = unavailable_reason(backend, device_type)
    if reason is not None:
        raise RuntimeError(f"swishkernels: {what} cannot run {device_type} tensors: {reason}")


def available_backends(device: Union[str, torch.device] = "cuda") -> List[str]:
    """Backends that can run tensors on `device` here and now, best first."""
    device_type = torch.device(device).type
    order = _PREFERENCE.get(device_type, ("reference",))
    return [name for name in order if unavailable_reason(name, device_type) is None]


_DEFAULT_FOR_DEVICE = {}  # device type -> backend: every activation call asks, so answer from a cache


def _default_backend(device_type: str) -> str:
    if device_type not in _DEFAULT_FOR_DEVICE:
        available = available_backends(device_type)
        if not available:
            raise RuntimeError(f"swishkernels: no backend can run {device_type} tensors here")
        _DEFAULT_FOR_DEVICE[device_type] = available[0]
    return _DEFAULT_FOR_DEVICE[device_type]


# os.environ's own dict (CPython keeps the environment there; monkeypatch.setenv and os.environ[...] = ...
# update it): a lookup in it costs a few ns per activation call, where os.environ.get costs about 1 us when
# the variable is unset (a KeyError raised and caught inside). Elsewhere os.environ.get is used.
_ENVIRON_DATA = getattr(os.environ, "_data", None)
_ENV_KEY = os.environ.encodekey(ENV_VAR) if isinstance(_ENVIRON_DATA, dict) else None


def env_requests_a_backend() -> bool:
    """Whether $SWISHKERNELS_BACKEND is set (to anything): a dict lookup on CPython."""
    if _ENV_KEY is not None:
        return _ENV_KEY in _ENVIRON_DATA
    return ENV_VAR in os.environ


def requested(backend: Optional[str]) -> Optional[str]:
    """The backend the user asked for: `backend=`, else $SWISHKERNELS_BACKEND, else None (choose the best).
    The one place that reads the variable."""
    if backend is not None:
        return backend
    return os.environ.get(ENV_VAR) or None if env_requests_a_backend() else None


def resolve(backend: Optional[str], device: torch.device) -> str:
    """The backend that runs a call with tensors on `device`."""
    name = requested(backend)
    if name is None:
        return _default_backend(device.type)
    reason = unavailable_reason(name, device.type)  # raises ValueError for unknown names
    if reason is not None:
        source = "backend=" if backend is not None else f"${ENV_VAR}="
        raise RuntimeError(
            f"swishkernels: {source}{name!r} cannot run {device.type} tensors: {reason}. "
            f"Available for {device.type}: {available_backends(device.type) or 'none'}"
        )
    return name
