"""autograd.Function forms (the seed's MemoryEfficientSwish pattern): save x, recompute in backward.

`SwishFunction.apply(x)` / `MishFunction.apply(x)` are also the path every functional and module call
takes while a torch.func transform (vmap, grad, vjp, jvp, jacrev, jacfwd, hessian) or forward-mode AD
(`torch.autograd.forward_ad`) is active: the C++ ops differentiate in C++, which functorch cannot
see through, and torch.library custom ops have no forward-mode rule. So each Function here carries all
four rules next to each other:
  forward   the backend's forward op                            (saves only x for backward)
  backward  the backend's backward op, through _Backward         (so it is differentiable again)
  jvp       f'(x) * x_t, the same backward op with x_t as the incoming gradient
  vmap      generated: forward runs on the batched tensor, whose ops have batching rules (ops.py)
_Backward (g, x) -> g * f'(x) has its own backward and jvp from f'' in PyTorch ops (second derivatives
are rare and not worth a kernel), so hessian, jacfwd(jacrev) and vmap(grad) work.
"""
import torch

from . import _layout, backends, ops, reference

# f' and f'' in PyTorch ops: reference.py is their one home.
_SECOND_DERIVATIVES = {"swish": reference.swish_derivatives, "mish": reference.mish_derivatives}


def _make_backward_function(activation: str):
    derivatives = _SECOND_DERIVATIVES[activation]

    class _Backward(torch.autograd.Function):
        """grad_input = grad_output * f'(x), computed by the backend's backward op."""
        generate_vmap_rule = True

        @staticmethod
        def forward(grad_output, x, backend):
            with ops.called_with_a_jvp_rule():
                return ops.get(backend, activation).backward(grad_output, x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            grad_output, x, _ = inputs
            ctx.save_for_backward(grad_output, x)
            ctx.save_for_forward(grad_output, x)

        @staticmethod
        def backward(ctx, grad_grad_input):
            grad_output, x = ctx.saved_tensors
            first, second = derivatives(x)
            return grad_grad_input * first, grad_grad_input * grad_output * second, None

        @staticmethod
        def jvp(ctx, grad_output_tangent, x_tangent, _):
            grad_output, x = ctx.saved_tensors
            first, second = derivatives(x)
            tangent = None
            if grad_output_tangent is not None:
                tangent = grad_output_tangent * first
            if x_tangent is not None:
                term = x_tangent * grad_output * second
                tangent = term if tangent is None else tangent + term
            return tangent

    _Backward.__name__ = _Backward.__qualname__ = f"{activation.capitalize()}BackwardFunction"
    return _Backward


def _make_function(activation: str):
    backward_function = _make_backward_function(activation)

    class _Function(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x, backend=None):
            _layout.check_dtype(x, activation)
            with ops.called_with_a_jvp_rule():
                return ops.get(backends.resolve(backend, x.device), activation).forward(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, backend = inputs
            ctx.backend = backends.resolve(backend, x.device)
            ctx.save_for_backward(x)   # the only tensor kept for backward
            ctx.save_for_forward(x)    # forward-mode AD reads x; nothing is stored for backward by this

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return backward_function.apply(grad_output, x, ctx.backend), None

        @staticmethod
        def jvp(ctx, x_tangent, _):
            (x,) = ctx.saved_tensors
            return backward_function.apply(x_tangent, x, ctx.backend)

    _Function.__name__ = _Function.__qualname__ = f"{activation.capitalize()}Function"
    _Function.__doc__ = (f"{activation} as an autograd.Function that saves only its input; with jvp and "
                         f"vmap rules, so torch.func transforms and forward-mode AD work through it.")
    return _Function


SwishFunction = _make_function("swish")
MishFunction = _make_function("mish")
FUNCTIONS = {"swish": SwishFunction, "mish": MishFunction}
