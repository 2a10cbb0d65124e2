"""autograd.Function forms (the seed's MemoryEfficientSwish pattern): save x, recompute in backward.

The functional API already differentiates through the registered ops; these Functions exist for code
written against `SwishFunction.apply(x)`. They call the backend's kernels directly.
"""
import torch

from . import _layout, backends, ops


def _make_function(activation: str):
    class _Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, backend=None):
            _layout.check_dtype(x, activation)
            op_set = ops.get(backends.resolve(backend, x.device), activation)
            ctx.op_backward = op_set.backward
            ctx.save_for_backward(x)
            return op_set.forward(x)

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            # The backward op is itself differentiable, so double backward works through it.
            return ctx.op_backward(grad_output, x), None

    _Function.__name__ = _Function.__qualname__ = f"{activation.capitalize()}Function"
    _Function.__doc__ = f"{activation} as an autograd.Function that saves only its input."
    return _Function


SwishFunction = _make_function("swish")
MishFunction = _make_function("mish")
