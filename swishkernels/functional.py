"""Functional API: sk.swish(x), sk.mish(x), and their in-place inference forms."""
from typing import Optional

import torch

from . import _layout, backends, ops, special_paths


def _ops_for(x: torch.Tensor, activation: str, backend: Optional[str]) -> ops.OpSet:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"swishkernels.{activation}: expected a torch.Tensor, got {type(x).__name__}")
    _layout.check_dtype(x, activation)
    return ops.get(backends.resolve(backend, x.device), activation)


def swish(x: torch.Tensor, *, backend: Optional[str] = None) -> torch.Tensor:
    """x * sigmoid(x), saving only x for backward."""
    op_set = _ops_for(x, "swish", backend)
    if special_paths.special_path():
        return special_paths.activate(x, "swish", backend)
    return op_set.forward(x)


def mish(x: torch.Tensor, *, backend: Optional[str] = None) -> torch.Tensor:
    """x * tanh(softplus(x)), saving only x for backward."""
    op_set = _ops_for(x, "mish", backend)
    if special_paths.special_path():
        return special_paths.activate(x, "mish", backend)
    return op_set.forward(x)


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def activate(x: torch.Tensor, activation: str, inplace: bool, backend: Optional[str]) -> torch.Tensor:
    """f(x), written into x only when asked and when autograd will not need x (an in-place result
    under autograd would have to keep a copy of x anyway, so it is computed out of place).
    Under torch.func transforms, forward-mode AD and ONNX export the call leaves the fast path
    (special_paths.py) and is computed out of place."""
    op_set = _ops_for(x, activation, backend)
    if special_paths.special_path():
        return special_paths.activate(x, activation, backend)
    if inplace and not _needs_grad(x):
        op_set.forward_inplace(x)
        return x
    return op_set.forward(x)
