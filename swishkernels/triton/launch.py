"""Host-side launchers: turn dense tensors into a flat 1-D Triton grid."""
import torch
import triton

from . import kernels

NUM_WARPS = 8
# Each thread moves 16 bytes per access, twice per block: 2048 fp32, 4096 fp16/bf16, 1024 fp64 elements.
ACCESSES_PER_THREAD = 2
# Past this many elements, block offsets no longer fit int32 (pid * BLOCK overflows).
INT64_THRESHOLD = 2**31

_FORWARD = {"swish": kernels.swish_forward_kernel, "mish": kernels.mish_forward_kernel}
_BACKWARD = {"swish": kernels.swish_backward_kernel, "mish": kernels.mish_backward_kernel}


def _block_size(dtype: torch.dtype) -> int:
    elements_per_access = 16 // torch.empty((), dtype=dtype).element_size()
    return elements_per_access * 32 * NUM_WARPS * ACCESSES_PER_THREAD


def _launch(kernel, tensors, numel: int, dtype: torch.dtype) -> None:
    if numel == 0:
        return
    block = _block_size(dtype)
    grid = (triton.cdiv(numel, block),)
    kernel[grid](*tensors, numel, BLOCK=block, INT64=numel + block >= INT64_THRESHOLD,
                 FP64=dtype == torch.float64, num_warps=NUM_WARPS)


def forward(activation: str, x: torch.Tensor, out: torch.Tensor) -> None:
    """out = f(x). x and out are dense with identical strides (out may be x itself)."""
    _launch(_FORWARD[activation], (x, out), x.numel(), x.dtype)


def backward(activation: str, grad_output: torch.Tensor, x: torch.Tensor, grad_input: torch.Tensor) -> None:
    """grad_input = grad_output * f'(x); all three dense with identical strides."""
    _launch(_BACKWARD[activation], (grad_output, x, grad_input), x.numel(), x.dtype)
