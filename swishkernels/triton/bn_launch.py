"""Host-side launchers for the fused BatchNorm + activation kernels (see bn_kernels.py for the tiles)."""
import torch
import triton

from .. import _layout
from . import bn_kernels
from .kernels import MISH, SWISH
from .launch import INT64_THRESHOLD, NUM_WARPS, _block_size, fast_math, max_programs

# Per-channel finishing kernels: small tiles, few warps.
FINISH_WARPS = 4
FINISH_BLOCK_C = 128
FINISH_TILE = 4096


def _tile_shape(rows: int, columns: int, tile: int, min_columns: int = 16):
    """(BLOCK_R, BLOCK_K), BLOCK_R * BLOCK_K = tile, power-of-two columns, wasting the fewest lanes to padding
    (rows and columns rounded up to whole blocks); ties go to wider columns. NCHW 52x52 = 2704 positions with
    16 samples: [16, 256] (2816 lanes per 2704 positions); 13x13 = 169 over (sample, channel) rows: [256, 16]."""
    best = None
    block_k = tile
    while block_k >= min(min_columns, triton.next_power_of_2(columns)) or best is None:
        block_r = max(tile // block_k, 1)
        waste = (triton.cdiv(columns, block_k) * block_k / columns) * (triton.cdiv(rows, block_r) * block_r / rows)
        if best is None or waste < best[0] - 1e-9:
            best = (waste, block_r, block_k)
        if block_k == 1:
            break
        block_k //= 2
    return best[1], best[2]


_acc_dtype = _layout.accumulation_dtype
_ACT = {"swish": SWISH.value, "mish": MISH.value}  # the kernels' ACT constexpr


def _common(x):
    return dict(INT64=x.numel() + _block_size(x.dtype) >= INT64_THRESHOLD, FP64=x.dtype == torch.float64,
                num_warps=NUM_WARPS)


def _fast(x):
    return dict(FAST=fast_math(x.dtype))


def _reduction_plan(x, heavy=False):
    """(grid, rows per program, constexprs) of a per-channel reduction over x. heavy: math that needs more
    registers per element (Mish's backward): NCHW tiles are halved, as for unaligned rows."""
    channels, inner, positions = _layout.channel_geometry(x)
    outer = positions // inner
    tile = _block_size(x.dtype)
    channels_last = inner == 1
    if channels_last:  # a tile spans neighbouring channels, which are adjacent in memory
        block_k = min(triton.next_power_of_2(channels), 64)
        block_r = max(tile // block_k, 1)
        c_blocks = triton.cdiv(channels, block_k)
    else:  # rows are the samples of one channel
        if inner % 16 or heavy:  # unaligned rows (scalar loads) or Mish's f': half the tile keeps sm_80 from spilling
            tile //= 2
        block_r, block_k = _tile_shape(outer, inner, tile)
        c_blocks = channels
    splits = max(1, min(triton.cdiv(max_programs(x.device), c_blocks), triton.cdiv(outer, block_r)))
    rows_per_program = triton.cdiv(triton.cdiv(outer, splits), block_r) * block_r
    splits = triton.cdiv(outer, rows_per_program)
    # COL_MASK: channels_last tiles need a channel mask only when C is not a multiple of their width.
    constexprs = dict(CL=channels_last, COL_MASK=channels_last and channels % block_k != 0, BLOCK_R=block_r,
                      BLOCK_K=block_k, **_common(x))
    return (c_blocks, splits), (channels, inner, outer, rows_per_program), constexprs


def _partials(x, splits):
    channels = x.size(1)
    a = torch.empty((splits, channels), dtype=_acc_dtype(x), device=x.device)
    return a, torch.empty_like(a)


def _stats_partials(x, shift, factor):
    """shift None: by each channel's first sample, scaled by its power-of-two factor (both found in the kernel)."""
    grid, sizes, constexprs = _reduction_plan(x)
    partial_sum, partial_sumsq = _partials(x, grid[1])
    bn_kernels.bn_stats_kernel[grid](x, x if shift is None else shift, x if factor is None else factor,
        partial_sum, partial_sumsq, *sizes, SAMPLE_SHIFT=shift is None, **constexprs)
    return partial_sum, partial_sumsq


def _backward_partials(grad_output, x, a, b, mean, activation, invstd=None, affine=-1):
    """affine < 0: a, b are scale and shift; else weight and bias (bit 0, bit 1: present), with invstd."""
    grid, sizes, constexprs = _reduction_plan(x, heavy=activation == "mish")
    partial_dz, partial_dzx = _partials(x, grid[1])
    bn_kernels.bn_act_backward_reduce_kernel[grid](grad_output, x, a, b, mean, mean if invstd is None else invstd,
                                                   partial_dz, partial_dzx, *sizes, AFFINE=affine,
                                                   ACT=_ACT[activation], **constexprs, **_fast(x))
    return partial_dz, partial_dzx


def _finish_blocks(channels, splits):
    block_c = min(triton.next_power_of_2(channels), FINISH_BLOCK_C)
    return block_c, max(1, min(triton.next_power_of_2(splits), FINISH_TILE // block_c))


# ---- the op-level passes (the interface every backend offers, bn_swish_ops.py) ----

def stats(x, shift, factor):
    """Per-channel sums of d = (x - shift) * factor and of d^2. Finished with .sum(0): used only as a plain op;
    BatchNormActFunction takes the in-kernel path, batch_stats."""
    partial_sum, partial_sumsq = _stats_partials(x, shift, factor)
    return partial_sum.sum(0), partial_sumsq.sum(0)


def backward_reduce(grad_output, x, scale, shift, mean, activation="swish"):
    partial_dz, partial_dzx = _backward_partials(grad_output, x, scale, shift, mean, activation)
    return partial_dz.sum(0), partial_dzx.sum(0)


def forward(x, scale, shift, out, activation="swish"):
    # Twice the elementwise tile (32 bytes per thread): the per-program work (a row's channel and
    # parameters) is then shared by more elements. Not for backward_input, whose registers would then
    # allow fewer than 4 programs per SM (tools/gpu_code/).
    _flat(bn_kernels.bn_act_forward_kernel, (x, scale, shift, out), x, {"ACT": _ACT[activation]}, tiles=2)


def backward_input(grad_output, x, scale, shift, coef_dz, coef_z, coef_0, grad_input, activation="swish"):
    _flat(bn_kernels.bn_act_backward_input_kernel,
          (grad_output, x, scale, shift, coef_dz, coef_z, coef_0, grad_input), x, {"ACT": _ACT[activation]})


def _flat(kernel, tensors, x, extra, tiles=1):
    if x.numel() == 0:
        return
    channels, inner, positions = _layout.channel_geometry(x)
    channels_last = inner == 1
    rows, columns = (positions, channels) if channels_last else (x.numel() // inner, inner)
    # Rows that start unaligned (13x13 = 169 positions: scalar accesses anyway) get one row per 16 threads:
    # narrower tiles would give every thread several rows, each with its channel and parameters.
    tile = tiles * _block_size(x.dtype)
    block_r, block_k = _tile_shape(rows, columns, tile, min_columns=64 if columns % 16 == 0 else tile // 16)
    kernel[(triton.cdiv(rows, block_r), triton.cdiv(columns, block_k))](*tensors, rows, columns, channels,
        CL=channels_last, BLOCK_R=block_r, BLOCK_K=block_k, **_common(x), **_fast(x), **extra)


# ---- per-channel finishing in kernels: 3 launches per training forward, 2 in eval, 3 per backward ----

def _per_channel(x, count):
    return [torch.empty(x.size(1), dtype=_acc_dtype(x), device=x.device) for _ in range(count)]


def finish_stats(x, weight, bias, running_mean, running_var, counter, momentum, eps, batch_stats):
    """(mean, invstd, scale, shift) per channel: from x's batch statistics (stats kernel + one finishing
    kernel) or from the running statistics (the finishing kernel alone). With batch statistics, running
    statistics (when given) are updated with `momentum` (None: cumulative average), and `counter` (when
    given) is incremented, in the kernel."""
    channels, inner, positions = _layout.channel_geometry(x)
    mean, invstd, scale, shift = _per_channel(x, 4)
    if batch_stats:
        partial_sum, partial_sumsq = _stats_partials(x, None, None)
    else:
        partial_sum = partial_sumsq = mean  # not read
    splits = partial_sum.size(0) if batch_stats else 1
    block_c, block_s = _finish_blocks(channels, splits)
    update = batch_stats and running_mean is not None
    bn_kernels.bn_finish_stats_kernel[(1,)](x, partial_sum, partial_sumsq,
        mean if weight is None else weight, mean if bias is None else bias,
        mean if running_mean is None else running_mean, mean if running_var is None else running_var,
        mean if counter is None or not batch_stats else counter,
        mean, invstd, scale, shift, channels, inner, splits, positions,
        0.0 if momentum is None else float(momentum), float(eps),
        BATCH_STATS=batch_stats, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, UPDATE_RUNNING=update,
        HAS_COUNTER=batch_stats and counter is not None, CUMULATIVE=momentum is None,
        BLOCK_C=block_c, BLOCK_S=block_s, FP64=x.dtype == torch.float64, num_warps=FINISH_WARPS)
    return mean, invstd, scale, shift


def finish_backward(grad_output, x, weight, bias, mean, invstd, batch_stats, param_dtype, activation="swish"):
    """(scale, shift, coef_z, coef_0, grad_weight, grad_bias): z = x * scale + shift again, the coefficients of
    BatchNorm's input gradient (zeros without batch statistics), and the parameter gradients (in param_dtype,
    default the accumulation dtype), from one reduction kernel and one finishing kernel."""
    channels, _, positions = _layout.channel_geometry(x)
    affine = (weight is not None) + 2 * (bias is not None)
    partial_dz, partial_dzx = _backward_partials(grad_output, x, mean if weight is None else weight,
                                                 mean if bias is None else bias, mean, activation, invstd, affine)
    scale, shift, coef_z, coef_0 = _per_channel(x, 4)
    grad_weight, grad_bias = (torch.empty_like(scale, dtype=param_dtype or scale.dtype) for _ in range(2))
    block_c, block_s = _finish_blocks(channels, partial_dz.size(0))
    bn_kernels.bn_finish_backward_kernel[(triton.cdiv(channels, block_c),)](
        partial_dz, partial_dzx, mean if weight is None else weight, mean if bias is None else bias, invstd, mean,
        scale, shift, coef_z, coef_0, grad_weight, grad_bias, channels, partial_dz.size(0), positions,
        BATCH_STATS=batch_stats, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        BLOCK_C=block_c, BLOCK_S=block_s, FP64=x.dtype == torch.float64, num_warps=FINISH_WARPS)
    return scale, shift, coef_z, coef_0, grad_weight, grad_bias
