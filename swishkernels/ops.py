"""torch.library ops for every backend, each with a fake (meta) implementation and autograd.

Per backend and activation there are three ops (X = swish or mish):
  X_forward(x) -> y                 saves only x for backward
  X_backward(grad_output, x) -> dx  recomputes the sigmoid; itself differentiable (double backward)
  X_forward_inplace(x!) -> ()       writes f(x) into x; for inference, no autograd
Every op also has a batching rule (register_vmap): the ops are elementwise, so a vmapped call is one
call on the whole batched tensor, for torch.func.vmap and the vmap rules of autograd.py's Functions.
The C++ extension defines `swishkernels::X_*` (CPU and CUDA kernels, and their autograd in C++, so a
training step spends no Python per activation; this file adds the fake implementations);
Triton and the PyTorch reference are defined here as `swishkernels::triton_X_*` and `reference_X_*`.
"""
import contextlib
import threading
from typing import Callable, NamedTuple

import torch
from torch.autograd import forward_ad

from . import _layout, backends, reference

ACTIVATIONS = ("swish", "mish")

_REFERENCE_MATH = {
    "swish": (reference.swish_forward, reference.swish_backward, reference.swish_double_backward),
    "mish": (reference.mish_forward, reference.mish_backward, reference.mish_double_backward),
}


class OpSet(NamedTuple):
    forward: Callable
    backward: Callable
    forward_inplace: Callable


def _register_autograd(activation: str, forward_name: str, backward_name: str, backward) -> None:
    """Forward saves x alone; backward calls the backward op, whose own gradient uses reference math
    (second derivatives are rare and not worth a kernel)."""
    double_backward = _REFERENCE_MATH[activation][2]

    def forward_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    def forward_grad(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return backward(grad_output, x)

    def backward_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward_grad(ctx, grad_grad_input):
        grad_output, x = ctx.saved_tensors
        return double_backward(grad_grad_input, grad_output, x)

    torch.library.register_autograd(forward_name, forward_grad, setup_context=forward_setup)
    torch.library.register_autograd(backward_name, backward_grad, setup_context=backward_setup)


def _batched_pair(info, in_dims, grad_output, x):
    """grad_output and x with their vmap dimension first (an unbatched one expanded to the batch)."""
    def batch_first(t, dim):
        if dim is None:
            return t.unsqueeze(0).expand(info.batch_size, *t.shape)
        return t.movedim(dim, 0)
    return batch_first(grad_output, in_dims[0]), batch_first(x, in_dims[1])


def _register_vmap(forward, backward, forward_inplace) -> None:
    def forward_rule(info, in_dims, x):
        return forward(x), in_dims[0]

    def backward_rule(info, in_dims, grad_output, x):
        if in_dims[0] is None and in_dims[1] is None:
            return backward(grad_output, x), None
        return backward(*_batched_pair(info, in_dims, grad_output, x)), 0

    def forward_inplace_rule(info, in_dims, x):
        forward_inplace(x)  # elementwise: the whole batched storage at once
        return None, None

    torch.library.register_vmap(forward, forward_rule)
    torch.library.register_vmap(backward, backward_rule)
    torch.library.register_vmap(forward_inplace, forward_inplace_rule)


_CALLER = threading.local()  # .has_jvp_rule: set while autograd.py's Functions call the ops


@contextlib.contextmanager
def called_with_a_jvp_rule():
    """Marks op calls made by autograd.py's Functions, which handle forward-mode AD themselves."""
    previous = getattr(_CALLER, "has_jvp_rule", False)
    _CALLER.has_jvp_rule = True
    try:
        yield
    finally:
        _CALLER.has_jvp_rule = previous


def _refuse_forward_ad(op_name: str, activation: str) -> None:
    """torch.library custom ops have no forward-mode rule: under forward-mode AD (torch.func.jvp,
    jacfwd, hessian, torch.autograd.forward_ad) a custom op called directly would silently return no
    tangent (zeros). Inside torch.func.jvp the tangent is not visible here (the tensors are already
    unwrapped), so any direct call while a forward-AD level is active is refused."""
    if forward_ad._current_level >= 0 and not getattr(_CALLER, "has_jvp_rule", False):
        raise RuntimeError(
            f"{op_name}: forward-mode AD (torch.func.jvp/jacfwd/hessian, torch.autograd.forward_ad) "
            f"through the raw op is not supported (its tangent would be dropped); use "
            f"swishkernels.{activation}(), its module or its Function, which have a jvp rule")


# Fake (meta) implementations, the same for every backend: outputs in x's dense layout, dtype checked.
def _fake_forward(activation: str):
    def fake(x):
        _layout.check_dtype(x, f"{activation}_forward")
        return torch.empty_like(_layout.dense(x))
    return fake


def _fake_backward(activation: str):
    def fake(grad_output, x):
        _layout.check_dtype(x, f"{activation}_backward")
        return torch.empty_like(_layout.dense(x))
    return fake


def _fake_forward_inplace(activation: str):
    def fake(x):
        _layout.check_dtype(x, f"{activation}_forward_inplace")
    return fake


def _define_python_ops(prefix: str, activation: str, run_forward, run_backward) -> OpSet:
    """Define the three ops of one activation for a Python-implemented backend.

    run_forward(x, out) and run_backward(grad_output, x, grad_input) fill preallocated outputs that
    share the dense layout of x (run_forward may get out is x, for the in-place op).
    """
    name = f"swishkernels::{prefix}_{activation}"

    @torch.library.custom_op(f"{name}_forward", mutates_args=())
    def forward(x: torch.Tensor) -> torch.Tensor:
        _layout.check_dtype(x, f"{activation}_forward")
        _refuse_forward_ad(f"{name}_forward", activation)
        x = _layout.dense(x)
        out = torch.empty_like(x)
        run_forward(x, out)
        return out

    forward.register_fake(_fake_forward(activation))

    @torch.library.custom_op(f"{name}_backward", mutates_args=())
    def backward(grad_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        _layout.check_dtype(x, f"{activation}_backward")
        _refuse_forward_ad(f"{name}_backward", activation)
        x = _layout.dense(x)
        grad_input = torch.empty_like(x)
        run_backward(_layout.like(grad_output, x), x, grad_input)
        return grad_input

    backward.register_fake(_fake_backward(activation))

    @torch.library.custom_op(f"{name}_forward_inplace", mutates_args=("x",))
    def forward_inplace(x: torch.Tensor) -> None:
        _layout.check_dtype(x, f"{activation}_forward_inplace")
        work = _layout.dense(x)
        run_forward(work, work)
        if work is not x:  # a non-dense input was computed in a contiguous copy
            x.copy_(work)

    forward_inplace.register_fake(_fake_forward_inplace(activation))

    _register_autograd(activation, f"{name}_forward", f"{name}_backward", backward)
    _register_vmap(forward, backward, forward_inplace)
    return OpSet(forward, backward, forward_inplace)


def _triton_ops(activation: str) -> OpSet:
    def run_forward(x, out):
        backends.check_runnable("triton", x.device.type, f"the triton {activation} ops")
        from .triton import launch  # imports Triton only when this backend runs
        launch.forward(activation, x, out)

    def run_backward(grad_output, x, grad_input):
        backends.check_runnable("triton", x.device.type, f"the triton {activation} ops")
        from .triton import launch
        launch.backward(activation, grad_output, x, grad_input)

    return _define_python_ops("triton", activation, run_forward, run_backward)


def _reference_ops(activation: str) -> OpSet:
    math_forward, math_backward, _ = _REFERENCE_MATH[activation]

    def run_forward(x, out):
        out.copy_(math_forward(x))

    def run_backward(grad_output, x, grad_input):
        grad_input.copy_(math_backward(grad_output, x))

    return _define_python_ops("reference", activation, run_forward, run_backward)


def _extension_ops(activation: str) -> OpSet:
    """The C++ ops (defined by swishkernels._C, autograd included) given fake implementations."""
    namespace = torch.ops.swishkernels
    forward = getattr(namespace, f"{activation}_forward").default
    backward = getattr(namespace, f"{activation}_backward").default
    forward_inplace = getattr(namespace, f"{activation}_forward_inplace").default
    torch.library.register_fake(forward.name(), _fake_forward(activation))
    torch.library.register_fake(backward.name(), _fake_backward(activation))
    torch.library.register_fake(forward_inplace.name(), _fake_forward_inplace(activation))
    _register_vmap(forward, backward, forward_inplace)
    return OpSet(forward, backward, forward_inplace)


_OPS = {
    "triton": {act: _triton_ops(act) for act in ACTIVATIONS},
    "reference": {act: _reference_ops(act) for act in ACTIVATIONS},
}
if backends.EXTENSION_ERROR is None:
    _extension = {act: _extension_ops(act) for act in ACTIVATIONS}
    _OPS["cpu"] = _OPS["cuda"] = _extension


def get(backend: str, activation: str) -> OpSet:
    """The ops of `activation` for a backend that `backends.resolve` has already checked."""
    return _OPS[backend][activation]
