"""Functional API: sk.swish(x), sk.mish(x), and their in-place inference forms.

Per call this is the fast path of a 64-element activation, where Python dominates. A plain eager call
with no backend named goes straight into the C++ extension (swishkernels._C's fast entry, csrc/module.cpp:
the op through its typed dispatcher handle, no boxed torch.ops call), which itself answers None whenever
anything more is going on (a tensor subclass or __torch_function__ mode, a torch.func transform,
forward-mode AD, jit tracing/ONNX export, $SWISHKERNELS_BACKEND, a device whose default backend is not
the extension, a dtype the op refuses). Those calls, torch.compile (which must see the torch.ops op) and
calls naming a backend take the checked path below: the op set of the backend rule (resolved once per
device type when none is named), the special paths, the op's errors as our TypeError.
"""
from typing import Callable, Dict, Optional, Tuple

import torch

from . import _layout, backends, ops, special_paths

# (activation, device type) -> the op set a call with no backend named runs: resolved once per device type.
_DEFAULT_OPS: Dict[Tuple[str, str], ops.OpSet] = {}
_CPU_DEFAULT_OPS: Dict[str, ops.OpSet] = {}  # the same for CPU tensors, found without building a torch.device
_EXTENSION_BACKENDS = ("cpu", "cuda")

# torch.compile sees this as a constant True and never traces the fast entry (a C function it cannot trace).
_is_compiling = torch.compiler.is_compiling


def no_fast_entry(*args) -> None:
    return None


if backends.EXTENSION_ERROR is None:
    from . import _C
    FAST: Dict[str, Callable] = {"swish": _C.swish, "mish": _C.mish}
    FAST_ACTIVATE: Dict[str, Callable] = {"swish": _C.swish_activate, "mish": _C.mish_activate}
    # The module forms' call (modules.py), given nn.Module's global hook dicts once: mutated in place, never rebound.
    FAST_MODULE_CALL: Dict[str, Callable] = {"swish": _C.swish_module_call, "mish": _C.mish_module_call}
    from torch.nn.modules import module as _nn_module
    _C._set_module_hook_dicts(_nn_module._global_forward_hooks, _nn_module._global_forward_pre_hooks,
                              _nn_module._global_backward_hooks, _nn_module._global_backward_pre_hooks)
    _set_fast_entry: Callable[[str, bool], None] = _C._set_fast_entry
else:  # no extension: every call takes the checked path
    FAST = {"swish": no_fast_entry, "mish": no_fast_entry}
    FAST_ACTIVATE = dict(FAST)
    FAST_MODULE_CALL = dict(FAST)

    def _set_fast_entry(device_type: str, enabled: bool) -> None:
        pass

_fast_swish, _fast_mish = FAST["swish"], FAST["mish"]


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
        if _is_compiling():  # traced by torch.compile, which cannot call into the extension: the next eager call caches
            return op_set
        device_type = x.device.type
        _DEFAULT_OPS[activation, device_type] = op_set
        if x.is_cpu:
            _CPU_DEFAULT_OPS[activation] = op_set
        if device_type in _EXTENSION_BACKENDS and backends.resolve(None, x.device) in _EXTENSION_BACKENDS:
            _set_fast_entry(device_type, True)  # the default here is the extension: plain calls go straight in
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
    if backend is None and not _is_compiling():
        y = _fast_swish(x)
        if y is not None:
            return y
    return _forward(x, "swish", backend)


def mish(x: torch.Tensor, *, backend: Optional[str] = None) -> torch.Tensor:
    """x * tanh(softplus(x)), saving only x for backward."""
    if backend is None and not _is_compiling():
        y = _fast_mish(x)
        if y is not None:
            return y
    return _forward(x, "mish", backend)


def activate(x: torch.Tensor, activation: str, inplace: bool, backend: Optional[str]) -> torch.Tensor:
    """f(x), written into x only when asked and when autograd will not need x (an in-place result
    under autograd would have to keep a copy of x anyway, so it is computed out of place).
    Under torch.func transforms, forward-mode AD and ONNX export the call leaves the fast path
    (special_paths.py) and is computed out of place."""
    if backend is None and not _is_compiling():
        y = FAST_ACTIVATE[activation](x, inplace)
        if y is not None:
            return y
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
