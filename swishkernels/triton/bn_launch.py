"""Host-side launchers for the fused BatchNorm + Swish kernels."""
import torch
import triton

from .. import _layout, backends
from . import bn_kernels
from .launch import INT64_THRESHOLD, NUM_WARPS, _block_size

# Reductions: about this many programs in flight (a GPU's worth; few under the CPU interpreter,
# which runs programs one after another).
TARGET_PROGRAMS = 1024
INTERPRETER_PROGRAMS = 4


def _reduction_grid(channels: int, inner: int, positions: int):
    # channels_last (inner == 1): a tile spans neighbouring channels, which are adjacent in memory.
    block_c = min(triton.next_power_of_2(channels), 64) if inner == 1 else 1
    block_j = max(4096 // block_c, 16)
    c_blocks = triton.cdiv(channels, block_c)
    target = INTERPRETER_PROGRAMS if backends.triton_interpreted() else TARGET_PROGRAMS
    splits = max(1, min(triton.cdiv(target, c_blocks), triton.cdiv(positions, block_j)))
    per_program = triton.cdiv(triton.cdiv(positions, splits), block_j) * block_j
    splits = triton.cdiv(positions, per_program)
    return block_c, block_j, (c_blocks, splits), per_program


def _reduce(kernel, tensors, x: torch.Tensor, acc_dtype: torch.dtype):
    channels, inner, positions = _layout.channel_geometry(x)
    block_c, block_j, grid, per_program = _reduction_grid(channels, inner, positions)
    partial_a = torch.empty((grid[1], channels), dtype=acc_dtype, device=x.device)
    partial_b = torch.empty_like(partial_a)
    kernel[grid](*tensors, partial_a, partial_b, channels, inner, positions, per_program,
                 BLOCK_C=block_c, BLOCK_J=block_j, FP64=x.dtype == torch.float64, num_warps=NUM_WARPS)
    return partial_a.sum(0), partial_b.sum(0)


def stats(x, shift):
    return _reduce(bn_kernels.bn_stats_kernel, (x, shift), x, shift.dtype)


def backward_reduce(grad_output, x, scale, shift, mean):
    return _reduce(bn_kernels.bn_swish_backward_reduce_kernel, (grad_output, x, scale, shift, mean), x,
                   scale.dtype)


def _elementwise(kernel, tensors, x: torch.Tensor):
    channels, inner, _ = _layout.channel_geometry(x)
    numel = x.numel()
    block = _block_size(x.dtype)
    kernel[(triton.cdiv(numel, block),)](*tensors, numel, channels, inner, BLOCK=block,
                                          INT64=numel + block >= INT64_THRESHOLD,
                                          FP64=x.dtype == torch.float64, num_warps=NUM_WARPS)


def forward(x, scale, shift, out):
    _elementwise(bn_kernels.bn_swish_forward_kernel, (x, scale, shift, out), x)


def backward_input(grad_output, x, scale, shift, coef_dz, coef_x, coef_0, grad_input):
    _elementwise(bn_kernels.bn_swish_backward_input_kernel,
                 (grad_output, x, scale, shift, coef_dz, coef_x, coef_0, grad_input), x)
