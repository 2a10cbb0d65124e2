"""What `torch.jit.script` compiles for sk.Swish / sk.Mish: the same ops, called by name.

TorchScript cannot compile the backend choice (environment, caches, Python kernels chosen at run
time), so a scripted module calls the op of the backend fixed when it was scripted
(`Swish.__prepare_scriptable__` reads `backend=` or $SWISHKERNELS_BACKEND then):
  None, "cpu", "cuda"  the C++ ops (swishkernels::swish_forward, ...) for CPU and CUDA tensors; a
                       scripted model saved with these runs wherever swishkernels._C is loaded
  "reference", "triton" the Python custom ops (scripted code runs in Python only)
TorchScript compiles every branch it sees, and the C++ op names exist only when the extension is
loaded, so there are two versions of the function and backends.EXTENSION_ERROR picks one.
"""
from typing import Optional

import torch

from . import backends


def _python_op(x: torch.Tensor, activation: str, write: bool, backend: str) -> torch.Tensor:
    if backend == "reference":
        if activation == "swish":
            if write:
                torch.ops.swishkernels.reference_swish_forward_inplace(x)
                return x
            return torch.ops.swishkernels.reference_swish_forward(x)
        if write:
            torch.ops.swishkernels.reference_mish_forward_inplace(x)
            return x
        return torch.ops.swishkernels.reference_mish_forward(x)
    if backend == "triton":
        if activation == "swish":
            if write:
                torch.ops.swishkernels.triton_swish_forward_inplace(x)
                return x
            return torch.ops.swishkernels.triton_swish_forward(x)
        if write:
            torch.ops.swishkernels.triton_mish_forward_inplace(x)
            return x
        return torch.ops.swishkernels.triton_mish_forward(x)
    raise ValueError("swishkernels (TorchScript): unknown backend " + backend)


def _with_extension(x: torch.Tensor, activation: str, inplace: bool, backend: Optional[str]) -> torch.Tensor:
    write = inplace and not (torch.is_grad_enabled() and x.requires_grad)
    if backend is None or backend == "cpu" or backend == "cuda":
        if backend is not None and x.device.type != backend:
            raise RuntimeError("swishkernels (TorchScript): backend=" + backend + " cannot run "
                               + x.device.type + " tensors")
        if activation == "swish":
            if write:
                torch.ops.swishkernels.swish_forward_inplace(x)
                return x
            return torch.ops.swishkernels.swish_forward(x)
        if write:
            torch.ops.swishkernels.mish_forward_inplace(x)
            return x
        return torch.ops.swishkernels.mish_forward(x)
    return _python_op(x, activation, write, backend)


def _without_extension(x: torch.Tensor, activation: str, inplace: bool, backend: Optional[str]) -> torch.Tensor:
    write = inplace and not (torch.is_grad_enabled() and x.requires_grad)
    if backend is None:
        return _python_op(x, activation, write, "reference")
    if backend == "cpu" or backend == "cuda":
        raise RuntimeError("swishkernels (TorchScript): backend=" + backend + " needs the C++ extension "
                           "swishkernels._C, which is not loaded")
    return _python_op(x, activation, write, backend)


activate = _with_extension if backends.EXTENSION_ERROR is None else _without_extension


def script_backend(backend: Optional[str]) -> Optional[str]:
    """The backend a scripted module will call: `backend=`, else $SWISHKERNELS_BACKEND, else None."""
    name = backends.requested(backend)
    if name is not None and name not in backends.BACKENDS:
        raise ValueError(f"unknown swishkernels backend {name!r}; known backends: {', '.join(backends.BACKENDS)}")
    return name
