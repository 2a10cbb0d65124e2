"""Host-side launchers: turn dense tensors into a 1-D Triton grid for a grid-stride loop."""
import functools

import torch
import triton

from .. import backends
from . import kernels

NUM_WARPS = 8
# Each thread moves 16 bytes per access, twice per tile: 2048 fp32, 4096 fp16/bf16, 1024 fp64 elements.
ACCESSES_PER_THREAD = 2
# Past this many elements, tile offsets no longer fit int32 (tile * BLOCK overflows).
INT64_THRESHOLD = 2**31
# Grid-stride loops get this many programs per SM (8 warps each: the 64-warp maximum of sm_80/sm_90),
# and a few under the CPU interpreter, which runs programs one after another.
PROGRAMS_PER_SM = 8
INTERPRETER_PROGRAMS = 4

_FORWARD = {"swish": kernels.swish_forward_kernel, "mish": kernels.mish_forward_kernel}
_BACKWARD = {"swish": kernels.swish_backward_kernel, "mish": kernels.mish_backward_kernel}

@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count  # cached: no query per launch


def max_programs(device: torch.device) -> int:
    if device.type != "cuda":
        return INTERPRETER_PROGRAMS
    return PROGRAMS_PER_SM * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def fast_math(dtype: torch.dtype) -> bool:
    """The FAST constexpr (kernels.py): hardware approximations for fp32 math, when compiled for a GPU."""
    return dtype != torch.float64 and not backends.triton_interpreted()


def _block_size(dtype: torch.dtype) -> int:
    elements_per_access = 16 // torch.empty((), dtype=dtype).element_size()
    return elements_per_access * 32 * NUM_WARPS * ACCESSES_PER_THREAD


def _launch(kernel, tensors, numel: int, dtype: torch.dtype) -> None:
    if numel == 0:
        return
    block = _block_size(dtype)
    grid = (min(triton.cdiv(numel, block), max_programs(tensors[0].device)),)
    kernel[grid](*tensors, numel, BLOCK=block, INT64=numel + block >= INT64_THRESHOLD,
        FP64=dtype == torch.float64, FAST=fast_math(dtype), num_warps=NUM_WARPS)


def forward(activation: str, x: torch.Tensor, out: torch.Tensor) -> None:
    """out = f(x). x and out are dense with identical strides (out may be x itself)."""
    _launch(_FORWARD[activation], (x, out), x.numel(), x.dtype)


def backward(activation: str, grad_output: torch.Tensor, x: torch.Tensor, grad_input: torch.Tensor) -> None:
    """grad_input = grad_output * f'(x); all three dense with identical strides."""
    _launch(_BACKWARD[activation], (grad_output, x, grad_input), x.numel(), x.dtype)
