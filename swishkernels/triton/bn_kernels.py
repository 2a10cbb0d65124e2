"""@triton.jit kernels for fused BatchNorm + Swish.

A dense tensor's storage is seen as [outer, C, inner] (NCHW: [N, C, H*W]; channels_last: [N*H*W, C, 1]),
so one set of kernels serves every dense layout. Per-channel reductions use 2-D tiles of
[BLOCK_C channels, BLOCK_J positions]; elementwise kernels use a flat grid and find each element's
channel as (offset // inner) % C. Accumulation is fp32 (fp64 for fp64 inputs).
"""
import triton
import triton.language as tl

from .kernels import _compute_type, _sigmoid


@triton.jit
def _tile_offsets(c_block, j_start, C, inner, J, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr):
    c = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    j = (j_start + tl.arange(0, BLOCK_J)).to(tl.int64)  # reductions span whole tensors: int64 always
    offsets = (j // inner)[None, :] * (C * inner) + c[:, None] * inner + (j % inner)[None, :]
    mask = (c < C)[:, None] & (j < J)[None, :]
    return c, offsets, mask


@triton.jit
def bn_stats_kernel(x_ptr, shift_ptr, sum_ptr, sumsq_ptr, C, inner, J, J_PER_PROGRAM,
                    BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr, FP64: tl.constexpr):
    """Partial sums of (x - shift_c) and (x - shift_c)^2 per channel over one slice of positions.
    Shifting by a sample of the channel keeps the variance free of cancellation when |mean| >> std."""
    c_block = tl.program_id(0)
    split = tl.program_id(1)
    c = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    shift = _compute_type(tl.load(shift_ptr + c, mask=c < C, other=0.0), FP64)
    acc = tl.zeros((BLOCK_C, BLOCK_J), dtype=tl.float64 if FP64 else tl.float32)
    acc_sq = tl.zeros((BLOCK_C, BLOCK_J), dtype=tl.float64 if FP64 else tl.float32)
    j_end = tl.minimum(split * J_PER_PROGRAM + J_PER_PROGRAM, J)
    for j_start in range(split * J_PER_PROGRAM, j_end, BLOCK_J):
        _, offsets, mask = _tile_offsets(c_block, j_start, C, inner, j_end, BLOCK_C, BLOCK_J)
        x = _compute_type(tl.load(x_ptr + offsets, mask=mask, other=0.0), FP64)
        d = tl.where(mask, x - shift[:, None], 0.0)
        acc += d
        acc_sq += d * d
    out = split * C + c
    tl.store(sum_ptr + out, tl.sum(acc, axis=1), mask=c < C)
    tl.store(sumsq_ptr + out, tl.sum(acc_sq, axis=1), mask=c < C)


@triton.jit
def _swish_grad(z):
    s = _sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


@triton.jit
def bn_swish_backward_reduce_kernel(dy_ptr, x_ptr, scale_ptr, shift_ptr, mean_ptr, sum_dz_ptr, sum_dzx_ptr,
                                    C, inner, J, J_PER_PROGRAM,
                                    BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr, FP64: tl.constexpr):
    """Partial sums per channel of dz and dz * (x - mean), dz = dy * swish'(x * scale + shift)."""
    c_block = tl.program_id(0)
    split = tl.program_id(1)
    c = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    scale = tl.load(scale_ptr + c, mask=cmask, other=0.0)[:, None]
    shift = tl.load(shift_ptr + c, mask=cmask, other=0.0)[:, None]
    mean = tl.load(mean_ptr + c, mask=cmask, other=0.0)[:, None]
    acc = tl.zeros((BLOCK_C, BLOCK_J), dtype=tl.float64 if FP64 else tl.float32)
    acc_x = tl.zeros((BLOCK_C, BLOCK_J), dtype=tl.float64 if FP64 else tl.float32)
    j_end = tl.minimum(split * J_PER_PROGRAM + J_PER_PROGRAM, J)
    for j_start in range(split * J_PER_PROGRAM, j_end, BLOCK_J):
        _, offsets, mask = _tile_offsets(c_block, j_start, C, inner, j_end, BLOCK_C, BLOCK_J)
        x = _compute_type(tl.load(x_ptr + offsets, mask=mask, other=0.0), FP64)
        dy = _compute_type(tl.load(dy_ptr + offsets, mask=mask, other=0.0), FP64)
        dz = tl.where(mask, dy * _swish_grad(x * scale + shift), 0.0)
        acc += dz
        acc_x += dz * (x - mean)
    out = split * C + c
    tl.store(sum_dz_ptr + out, tl.sum(acc, axis=1), mask=cmask)
    tl.store(sum_dzx_ptr + out, tl.sum(acc_x, axis=1), mask=cmask)


@triton.jit
def _channel_offsets(numel, C, inner, BLOCK: tl.constexpr, INT64: tl.constexpr):
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    return offsets, offsets < numel, (offsets // inner) % C


@triton.jit
def bn_swish_forward_kernel(x_ptr, scale_ptr, shift_ptr, y_ptr, numel, C, inner,
                            BLOCK: tl.constexpr, INT64: tl.constexpr, FP64: tl.constexpr):
    """y = swish(x * scale_c + shift_c): the normalisation and affine folded into one multiply-add."""
    offsets, mask, c = _channel_offsets(numel, C, inner, BLOCK, INT64)
    x = _compute_type(tl.load(x_ptr + offsets, mask=mask), FP64)
    z = x * tl.load(scale_ptr + c, mask=mask) + tl.load(shift_ptr + c, mask=mask)
    tl.store(y_ptr + offsets, (z * _sigmoid(z)).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def bn_swish_backward_input_kernel(dy_ptr, x_ptr, scale_ptr, shift_ptr, coef_dz_ptr, coef_x_ptr, coef_0_ptr,
                                   dx_ptr, numel, C, inner,
                                   BLOCK: tl.constexpr, INT64: tl.constexpr, FP64: tl.constexpr):
    """dx = coef_dz_c * dz + coef_x_c * x + coef_0_c: BatchNorm's input gradient with its per-channel
    means already folded into the coefficients."""
    offsets, mask, c = _channel_offsets(numel, C, inner, BLOCK, INT64)
    x = _compute_type(tl.load(x_ptr + offsets, mask=mask), FP64)
    dy = _compute_type(tl.load(dy_ptr + offsets, mask=mask), FP64)
    z = x * tl.load(scale_ptr + c, mask=mask) + tl.load(shift_ptr + c, mask=mask)
    dz = dy * _swish_grad(z)
    dx = tl.load(coef_dz_ptr + c, mask=mask) * dz + tl.load(coef_x_ptr + c, mask=mask) * x \
        + tl.load(coef_0_ptr + c, mask=mask)
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
