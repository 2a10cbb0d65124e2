"""Pure-PyTorch Swish/Mish variants: the ground truth for tests and the peers for benchmarks.

Includes the three Swish versions from the 2019 YOLOv3 thread (naive module, the in-place `x.mul_`
module that silently changed its input, and MemoryEfficientSwish), kept exactly as written there so
tests and benchmarks can show what they cost and where they go wrong.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "swish_naive", "swish_seed_inplace", "MemoryEfficientSwishFunction",
    "NaiveSwish", "SeedInplaceSwish", "MemoryEfficientSwish",
    "swish_forward", "swish_backward", "swish_double_backward", "swish_derivatives",
    "mish_forward", "mish_backward", "mish_double_backward", "mish_derivatives",
]


# ---- the seed's variants -------------------------------------------------------------------------------------

def swish_naive(x: torch.Tensor) -> torch.Tensor:
    """`x * sigmoid(x)`: autograd keeps both x and sigmoid(x) for backward."""
    return x * torch.sigmoid(x)


def swish_seed_inplace(x: torch.Tensor) -> torch.Tensor:
    """The seed's `x.mul_(torch.sigmoid(x))`: overwrites its input, so anything else that still
    reads x (a shortcut, a route) silently sees Swish(x). Kept only to demonstrate that bug."""
    return x.mul_(torch.sigmoid(x))


class MemoryEfficientSwishFunction(torch.autograd.Function):
    """The seed's SwishImplementation: saves only the input, recomputes sigmoid in backward."""

    @staticmethod
    def forward(ctx, i):
        result = i * torch.sigmoid(i)
        ctx.save_for_backward(i)
        return result

    @staticmethod
    def backward(ctx, grad_output):
        (i,) = ctx.saved_tensors
        sigmoid_i = torch.sigmoid(i)
        return grad_output * (sigmoid_i * (1 + i * (1 - sigmoid_i)))


class NaiveSwish(nn.Module):
    def forward(self, x):
        return swish_naive(x)


class SeedInplaceSwish(nn.Module):
    def forward(self, x):
        return swish_seed_inplace(x)


class MemoryEfficientSwish(nn.Module):
    def forward(self, x):
        return MemoryEfficientSwishFunction.apply(x)


# ---- reference math for the `reference` backend ----------------------------------------------------------
# Computed in fp32 for 16-bit inputs (as the kernels do) and in the input's precision otherwise.

def _compute_dtype(x):
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def swish_forward(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x.to(_compute_dtype(x))).to(x.dtype)


def swish_derivatives(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """f'(x) and f''(x) of Swish, s = sigmoid(x): f' = s(1 + x(1 - s)), f'' = s(1 - s)(2 + x(1 - 2s)).
    Written with differentiable ops (third and higher derivatives work). The one home of this math in
    Python: the autograd Functions' double backward uses it too."""
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s)), s * (1 - s) * (2 + x * (1 - 2 * s))


def swish_backward(grad_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    xc = x.to(_compute_dtype(x))
    return (grad_output.to(xc.dtype) * swish_derivatives(xc)[0]).to(x.dtype)


def swish_double_backward(grad_grad_input: torch.Tensor, grad_output: torch.Tensor,
                          x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients of swish_backward(g, x) = g * f'(x) w.r.t. g and x, given the incoming gradient
    `grad_grad_input`."""
    d1, d2 = swish_derivatives(x)
    return grad_grad_input * d1, grad_grad_input * grad_output * d2


def mish_derivatives(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """f'(x) and f''(x) of Mish, t = tanh(softplus(x)), s = sigmoid(x), dt/dx = s(1 - t^2):
    f' = t + x s (1 - t^2), f'' = (1 - t^2) s (2 + x(1 - s) - 2 x s t)."""
    t = torch.tanh(F.softplus(x))
    s = torch.sigmoid(x)
    sech2 = 1 - t * t
    return t + x * s * sech2, sech2 * s * (2 + x * (1 - s) - 2 * x * s * t)


def mish_forward(x: torch.Tensor) -> torch.Tensor:
    return F.mish(x.to(_compute_dtype(x))).to(x.dtype)


def mish_backward(grad_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    xc = x.to(_compute_dtype(x))
    return (grad_output.to(xc.dtype) * mish_derivatives(xc)[0]).to(x.dtype)


def mish_double_backward(grad_grad_input: torch.Tensor, grad_output: torch.Tensor,
                         x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients of mish_backward(g, x) = g * f'(x) w.r.t. g and x."""
    d1, d2 = mish_derivatives(x)
    return grad_grad_input * d1, grad_grad_input * grad_output * d2
