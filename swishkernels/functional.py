"""Functional API: sk.swish(x), sk.mish(x), and their in-place inference forms.

Per call this is the fast path of a 64-element activation, where Python dominates: when no backend is
named (no `backend=`, no $SWISHKERNELS_BACKEND) the op set is the one resolved on the first call for that
device type; the dtype is checked by the op itself (its error is turned into our TypeError), so a call
costs a dict lookup and the special-path check on top of the op.
"""
from typing import Dict, Optional, Tuple

import torch

from . import _layout, backends, ops, special_paths

# (activation, device type) -> the op set a call with no backend named runs: resolved once per device type.
_DEFAULT_OPS: Dict[Tuple[str, str], ops.OpSet] = {}
_CPU_DEFAULT_OPS: Dict[str, ops.OpSet] = {}  # the same for CPU tensors, found without building a torch.device


def _ops_for(x: torch.Tensor, activation: str, backend: Optional[str]) -> ops.OpSet:
    """The checked path: argument type, dtype, the backend rule and its errors."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"swishkernels.{activation}: expected a torch.Tensor, got {type(x).__name__}")
    _layout.check_dtype(x, activation)
    return ops.get(backends.resolve(backend, x.device), activation)


def _op_set(x: torch.Tensor, activation: str, backend: Optional[str]) -> ops.OpSet:
    if backend is not None or backends.env_requests_a_backend():  # named: checked every call (may not run here)
        return _ops_for(x, activation, backend)
    try:
        if x.is_cpu:
            return _CPU_DEFAULT_OPS[activation]
        return _DEFAULT_OPS[activation, x.device.type]
    except (KeyError, AttributeError):  # the first call on this device type, or not a tensor
        op_set = _ops_for(x, activation, None)  # raises for a non-tensor or an unsupported dtype
        _DEFAULT_OPS[activation, x.device.type] = op_set
        if x.is_cpu:
            _CPU_DEFAULT_OPS[activation] = op_set
        return op_set


def _forward(x: torch.Tensor, activation: str, backend: Optional[str]) -> torch.Tensor:
    op_set = _op_set(x, activation, backend)
    if special_paths.special_path():
        _layout.check_dtype(x, activation)
        return special_paths.activate(x, activation, backend)
    try:
        return op_set.forward(x)
    except RuntimeError:
        _layout.check_dtype(x, activation)  # the op's own dtype error, as the TypeError every form raises
        raise


def swish(x: torch.Tensor, *, backend: Optional[str] = None) -> torch.Tensor:
    """x * sigmoid(x), saving only x for backward."""
    return _forward(x, "swish", backend)


def mish(x: torch.Tensor, *, backend: Optional[str] = None) -> torch.Tensor:
    """x * tanh(softplus(x)), saving only x for backward."""
    return _forward(x, "mish", backend)


def activate(x: torch.Tensor, activation: str, inplace: bool, backend: Optional[str]) -> torch.Tensor:
    """f(x), written into x only when asked and when autograd will not need x (an in-place result
    under autograd would have to keep a copy of x anyway, so it is computed out of place).
    Under torch.func transforms, forward-mode AD and ONNX export the call leaves the fast path
    (special_paths.py) and is computed out of place."""
    op_set = _op_set(x, activation, backend)
    if special_paths.special_path():
        _layout.check_dtype(x, activation)
        return special_paths.activate(x, activation, backend)
    try:
        if inplace and not (x.requires_grad and torch.is_grad_enabled()):
            op_set.forward_inplace(x)
            return x
        return op_set.forward(x)
    except RuntimeError:
        _layout.check_dtype(x, activation)  # the op's own dtype error, as the TypeError every form raises
        raise
