"""@triton.jit kernels for fused BatchNorm + activation (ACT: Swish or Mish, kernels.SWISH / kernels.MISH).

A dense tensor's storage is seen as [outer, C, inner] (NCHW: [N, C, H*W]; channels_last: [N*H*W, C, 1]),
so one set of kernels serves every dense layout, with CL (inner == 1) a constexpr. No kernel divides
per element: tiles are 2-D, [rows, contiguous columns], and a row or column is one channel or one sample.
  NCHW: rows are (sample, channel) pairs or, in reductions, samples of one channel; columns are positions.
  channels_last: rows are positions, columns are channels.
Per-channel values are loaded once per program (per row or per column of its tile), never gathered per
element. Accumulation is fp32 (fp64 for fp64 inputs); the per-channel statistics are finished in fp64.

Launches per layer: training forward = stats + finish_stats + forward; eval forward = finish_stats (from the
running statistics) + forward; backward = backward_reduce + finish_backward + backward_input.
"""
import triton
import triton.language as tl

from .kernels import SWISH, _compute_type, _forward_math, _mish_parts, _sigmoid


@triton.jit
def _activation_grad(dy, z, ACT: tl.constexpr, FAST: tl.constexpr):
    """dy * f'(z). Swish as dy * (s * (1 + z * (1 - s))): this grouping compiles to fewer instructions in the
    BatchNorm kernels than kernels._backward_math's (tools/gpu_code/)."""
    if ACT == SWISH:
        s = _sigmoid(z, FAST)
        return dy * (s * (1.0 + z * (1.0 - s)))
    else:
        t, s = _mish_parts(z, FAST)
        return dy * (t + z * s * (1.0 - t * t))


@triton.jit
def _stats_factor(sample, FP64: tl.constexpr):
    """2^-e for |sample| in [2^(e-1), 2^e), e clamped to [0, the largest that keeps 2^-e normal]: the
    statistics' per-channel scale, exact (a power of two), so that d^2 of fp32 values near 1e20 stays finite.
    Same bits as bn_swish_ops.stats_factor."""
    if FP64:
        e = ((sample.to(tl.int64, bitcast=True) >> 52) & 0x7FF) - 1022
        e = tl.minimum(tl.maximum(e, 0), 1022)
        return ((1023 - e) << 52).to(tl.float64, bitcast=True)
    else:
        e = ((sample.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 126
        e = tl.minimum(tl.maximum(e, 0), 126)
        return ((127 - e) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _rsqrt(v, FP64: tl.constexpr):
    # Correctly rounded sqrt and division (fp32's defaults are approximate); per channel, so free.
    if FP64:
        return 1.0 / tl.sqrt(v)
    else:
        return tl.div_rn(1.0, tl.sqrt_rn(v))


@triton.jit
def _acc_zeros(BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, FP64: tl.constexpr):
    return tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float64 if FP64 else tl.float32)


@triton.jit
def _affine(weight_ptr, bias_ptr, mean, invstd, c, c_ok, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
            FP64: tl.constexpr):
    """BatchNorm's normalise-then-affine as z = x * scale + shift."""
    scale = invstd
    if HAS_WEIGHT:
        scale = _compute_type(tl.load(weight_ptr + c, mask=c_ok), FP64) * invstd
    shift = -mean * scale
    if HAS_BIAS:
        shift = _compute_type(tl.load(bias_ptr + c, mask=c_ok), FP64) - mean * scale
    return scale, shift


@triton.jit
def _backward_channel(a_ptr, b_ptr, mean_ptr, invstd_ptr, c, c_ok, AFFINE: tl.constexpr, FP64: tl.constexpr):
    """(scale, shift, mean) of channel(s) c: loaded (AFFINE < 0) or made from weight a (if AFFINE & 1), bias b
    (if AFFINE & 2), mean and invstd."""
    mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
    if AFFINE < 0:
        scale = tl.load(a_ptr + c, mask=c_ok, other=0.0)
        shift = tl.load(b_ptr + c, mask=c_ok, other=0.0)
    else:
        invstd = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
        scale, shift = _affine(a_ptr, b_ptr, mean, invstd, c, c_ok, (AFFINE & 1) != 0, (AFFINE & 2) != 0, FP64)
    return scale, shift, mean


@triton.jit
def _accumulate(acc_a, acc_b, x_ptr, dy_ptr, offsets, mask, scale, shift, mean, BACKWARD: tl.constexpr,
                ACT: tl.constexpr, FP64: tl.constexpr, FAST: tl.constexpr, MASKED: tl.constexpr):
    """One tile into the accumulators. MASKED=False (whole tiles, the hot loop): no mask, so no predicates,
    zero-fills or selects, and 16-byte loads where the rows allow them. Stats: scale is the power-of-two
    factor and shift the shift times it, so d = x * scale - shift = (x - shift_c) * factor exactly (one FMA)."""
    if MASKED:
        x = _compute_type(tl.load(x_ptr + offsets, mask=mask, other=0.0), FP64)
    else:
        x = _compute_type(tl.load(x_ptr + offsets), FP64)
    if BACKWARD:
        # Masked lanes load dy = 0, so their dz and dz * (x - mean) are 0: no select needed.
        if MASKED:
            dy = _compute_type(tl.load(dy_ptr + offsets, mask=mask, other=0.0), FP64)
        else:
            dy = _compute_type(tl.load(dy_ptr + offsets), FP64)
        dz = _activation_grad(dy, x * scale + shift, ACT, FAST)
        acc_a += dz
        acc_b += dz * (x - mean)
    else:
        d = x * scale - shift
        if MASKED:
            d = tl.where(mask, d, 0.0)
        acc_a += d
        acc_b += d * d
    return acc_a, acc_b


@triton.jit
def _accumulate_rows(acc_a, acc_b, x_ptr, dy_ptr, r, row_ok, c, c_ok, cols, C, inner, row_stride, scale, shift,
                     mean, BACKWARD: tl.constexpr, ACT: tl.constexpr, CL: tl.constexpr, COL_MASK: tl.constexpr,
                     BLOCK_K: tl.constexpr,
                     FP64: tl.constexpr, FAST: tl.constexpr, MASKED_ROWS: tl.constexpr):
    """Rows r (a [BLOCK_R] block) into the accumulators: their channels (CL) or all their positions (NCHW,
    whole column blocks unmasked, then the partial one)."""
    if CL:
        offsets = (r * row_stride)[:, None] + c[None, :]
        acc_a, acc_b = _accumulate(acc_a, acc_b, x_ptr, dy_ptr, offsets, row_ok[:, None] & c_ok[None, :], scale,
                                   shift, mean, BACKWARD, ACT, FP64, FAST, MASKED_ROWS or COL_MASK)
    else:
        row_offsets = (r * row_stride + c * inner)[:, None]
        full = inner // BLOCK_K * BLOCK_K
        for k0 in range(0, full, BLOCK_K):
            acc_a, acc_b = _accumulate(acc_a, acc_b, x_ptr, dy_ptr, row_offsets + (k0 + cols)[None, :],
                                       row_ok[:, None], scale, shift, mean, BACKWARD, ACT, FP64, FAST, MASKED_ROWS)
        if full < inner:
            k = full + cols
            acc_a, acc_b = _accumulate(acc_a, acc_b, x_ptr, dy_ptr, row_offsets + k[None, :],
                                       row_ok[:, None] & (k < inner)[None, :], scale, shift, mean, BACKWARD, ACT,
                                       FP64, FAST, True)
    return acc_a, acc_b


@triton.jit
def _channel_reduce(x_ptr, dy_ptr, scale_ptr, shift_ptr, mean_ptr, invstd_ptr, out_a_ptr, out_b_ptr,
                    C, inner, outer, ROWS_PER_PROGRAM,
                    BACKWARD: tl.constexpr, ACT: tl.constexpr, SAMPLE_SHIFT: tl.constexpr, AFFINE: tl.constexpr,
                    CL: tl.constexpr, COL_MASK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
                    INT64: tl.constexpr, FP64: tl.constexpr,
                    FAST: tl.constexpr):
    """Partial per-channel sums over rows [split * ROWS_PER_PROGRAM, +ROWS_PER_PROGRAM) of the storage,
    written to out_a/out_b[split, c]. Stats (BACKWARD=False): sums of d and d^2, d = (x - x[sample 0, c]) * factor
    (shifting by a sample of the channel keeps the variance free of cancellation when |mean| >> std; the factor,
    _stats_factor of the sample, or scale_ptr[c] without SAMPLE_SHIFT, keeps d^2 finite).
    Backward: sums of dz and dz * (x - mean_c), dz = dy * f'(x * scale_c + shift_c); AFFINE: scale_ptr and
    shift_ptr hold weight and bias (AFFINE >= 0, see _backward_channel), and scale, shift come from them and
    mean, invstd (see _affine).
    Rows: positions (CL, stride C) or samples of one channel (NCHW, stride C * inner)."""
    split = tl.program_id(1)
    cols = tl.arange(0, BLOCK_K)
    # Per-channel values, once per program: [1, BLOCK_K] (CL) or scalars (NCHW).
    if CL:
        c = tl.program_id(0) * BLOCK_K + cols
        c_ok = c < C
        if BACKWARD:
            scale, shift, mean = _backward_channel(scale_ptr, shift_ptr, mean_ptr, invstd_ptr, c, c_ok, AFFINE,
                                                   FP64)
            scale = scale[None, :]
            shift = shift[None, :]
            mean = mean[None, :]
        else:
            mean = 0.0
            shift_src = x_ptr + c if SAMPLE_SHIFT else shift_ptr + c
            shift = _compute_type(tl.load(shift_src, mask=c_ok, other=0.0), FP64)
            if SAMPLE_SHIFT:
                scale = _stats_factor(shift, FP64)
            else:
                scale = tl.load(scale_ptr + c, mask=c_ok, other=1.0)
            shift = (shift * scale)[None, :]
            scale = scale[None, :]
        row_stride = C
    else:
        c = tl.program_id(0)
        c_ok = True
        if BACKWARD:
            scale, shift, mean = _backward_channel(scale_ptr, shift_ptr, mean_ptr, invstd_ptr, c, True, AFFINE,
                                                   FP64)
        else:
            mean = 0.0
            shift_src = x_ptr + c * inner if SAMPLE_SHIFT else shift_ptr + c
            shift = _compute_type(tl.load(shift_src), FP64)
            if SAMPLE_SHIFT:
                scale = _stats_factor(shift, FP64)
            else:
                scale = tl.load(scale_ptr + c)
            shift = shift * scale
        row_stride = C * inner
    acc_a = _acc_zeros(BLOCK_R, BLOCK_K, FP64)
    acc_b = _acc_zeros(BLOCK_R, BLOCK_K, FP64)
    row_start = split * ROWS_PER_PROGRAM
    row_end = tl.minimum(row_start + ROWS_PER_PROGRAM, outer)
    rows = tl.arange(0, BLOCK_R)
    full_end = row_start + (row_end - row_start) // BLOCK_R * BLOCK_R
    for r0 in range(row_start, full_end, BLOCK_R):  # whole row blocks
        r = r0 + rows
        if INT64:
            r = r.to(tl.int64)
        acc_a, acc_b = _accumulate_rows(acc_a, acc_b, x_ptr, dy_ptr, r, r < row_end, c, c_ok, cols, C, inner,
                                        row_stride, scale, shift, mean, BACKWARD, ACT, CL, COL_MASK, BLOCK_K, FP64,
                                        FAST, False)
    if full_end < row_end:  # the partial row block
        r = full_end + rows
        if INT64:
            r = r.to(tl.int64)
        acc_a, acc_b = _accumulate_rows(acc_a, acc_b, x_ptr, dy_ptr, r, r < row_end, c, c_ok, cols, C, inner,
                                        row_stride, scale, shift, mean, BACKWARD, ACT, CL, COL_MASK, BLOCK_K, FP64,
                                        FAST, True)
    out = split * C + c
    if CL:
        tl.store(out_a_ptr + out, tl.sum(acc_a, axis=0), mask=c_ok)
        tl.store(out_b_ptr + out, tl.sum(acc_b, axis=0), mask=c_ok)
    else:
        tl.store(out_a_ptr + out, tl.sum(tl.sum(acc_a, axis=1), axis=0))
        tl.store(out_b_ptr + out, tl.sum(tl.sum(acc_b, axis=1), axis=0))


@triton.jit
def bn_stats_kernel(x_ptr, shift_ptr, factor_ptr, sum_ptr, sumsq_ptr, C, inner, outer, ROWS_PER_PROGRAM,
                    SAMPLE_SHIFT: tl.constexpr, CL: tl.constexpr, COL_MASK: tl.constexpr, BLOCK_R: tl.constexpr,
                    BLOCK_K: tl.constexpr, INT64: tl.constexpr, FP64: tl.constexpr):
    """SAMPLE_SHIFT: shift by x[sample 0, position 0] of each channel, scaled by its _stats_factor (what
    bn_finish_stats_kernel expects), else by shift_ptr[c], scaled by factor_ptr[c]."""
    _channel_reduce(x_ptr, x_ptr, factor_ptr, shift_ptr, x_ptr, x_ptr, sum_ptr, sumsq_ptr, C, inner, outer,
                    ROWS_PER_PROGRAM, False, 0, SAMPLE_SHIFT, -1, CL, COL_MASK, BLOCK_R, BLOCK_K, INT64, FP64, False)


@triton.jit
def bn_act_backward_reduce_kernel(dy_ptr, x_ptr, scale_ptr, shift_ptr, mean_ptr, invstd_ptr, sum_dz_ptr,
                                  sum_dzx_ptr, C, inner, outer, ROWS_PER_PROGRAM, AFFINE: tl.constexpr,
                                  ACT: tl.constexpr, CL: tl.constexpr, COL_MASK: tl.constexpr,
                                  BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, INT64: tl.constexpr,
                                  FP64: tl.constexpr, FAST: tl.constexpr):
    """AFFINE < 0: scale_ptr, shift_ptr are scale and shift; else weight and bias (see _backward_channel)."""
    _channel_reduce(x_ptr, dy_ptr, scale_ptr, shift_ptr, mean_ptr, invstd_ptr, sum_dz_ptr, sum_dzx_ptr, C, inner,
                    outer, ROWS_PER_PROGRAM, True, ACT, False, AFFINE, CL, COL_MASK, BLOCK_R, BLOCK_K, INT64, FP64,
                    FAST)


@triton.jit
def _sum_splits(partial_ptr, c, c_ok, splits, C, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
                FP64: tl.constexpr):
    total = tl.zeros((BLOCK_C,), dtype=tl.float64 if FP64 else tl.float32)
    s = tl.arange(0, BLOCK_S)
    for s0 in range(0, splits, BLOCK_S):
        mask = ((s0 + s) < splits)[:, None] & c_ok[None, :]
        total += tl.sum(tl.load(partial_ptr + (s0 + s)[:, None] * C + c[None, :], mask=mask, other=0.0), axis=0)
    return total


@triton.jit
def _round_to(v64, like):
    """fp64 v64 in like's dtype, through fp32 for fp16/bf16 (Triton has no direct fp64 -> bf16 conversion)."""
    if like.dtype == tl.float64:
        return v64
    else:
        return v64.to(tl.float32).to(like.dtype)


@triton.jit
def bn_finish_stats_kernel(x_ptr, sum_ptr, sumsq_ptr, weight_ptr, bias_ptr, running_mean_ptr, running_var_ptr,
                           counter_ptr, mean_ptr, invstd_ptr, scale_ptr, shift_ptr,
                           C, inner, splits, positions, momentum: tl.float64, eps: tl.float64,
                           BATCH_STATS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                           UPDATE_RUNNING: tl.constexpr, HAS_COUNTER: tl.constexpr, CUMULATIVE: tl.constexpr,
                           BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, FP64: tl.constexpr):
    """Per channel: mean, 1/std, and BatchNorm's normalise-then-affine as z = x * scale + shift, from the
    partial sums (BATCH_STATS) or the running statistics; updates the running statistics and the batch
    counter in place as nn.BatchNorm2d does. One program: the counter is read and written once.
    Batch statistics are finished in fp64 (per channel: free), which holds variances past fp32's range, and the
    running statistics are blended in fp64 before they are rounded to their dtype (as nn.BatchNorm2d does)."""
    # fp64 arguments, made fp64 values: Triton would take a Python float as fp32.
    acc_type = tl.float64 if FP64 else tl.float32
    factor = tl.full((), momentum, tl.float64)
    eps64 = tl.full((), eps, tl.float64)
    eps = tl.full((), eps, acc_type)
    if HAS_COUNTER:
        count = tl.load(counter_ptr) + 1
        tl.store(counter_ptr, count)
        if CUMULATIVE:  # momentum=None: a cumulative average, factor 1 / batches seen
            factor = 1.0 / count.to(tl.float64)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = c < C
        if BATCH_STATS:
            total = _sum_splits(sum_ptr, c, c_ok, splits, C, BLOCK_S, BLOCK_C, FP64).to(tl.float64)
            total_sq = _sum_splits(sumsq_ptr, c, c_ok, splits, C, BLOCK_S, BLOCK_C, FP64).to(tl.float64)
            sample = _compute_type(tl.load(x_ptr + c * inner, mask=c_ok, other=0.0), FP64)  # the stats' shift
            scaled_by = _stats_factor(sample, FP64).to(tl.float64)
            n = positions.to(tl.float64)  # int / int would be fp32 in Triton
            mean_scaled = total / n
            mean64 = sample.to(tl.float64) + mean_scaled / scaled_by
            var = tl.maximum(total_sq / n - mean_scaled * mean_scaled, 0.0) / (scaled_by * scaled_by)
            if UPDATE_RUNNING:
                old_mean = tl.load(running_mean_ptr + c, mask=c_ok)
                old_var = tl.load(running_var_ptr + c, mask=c_ok)
                unbiased = var * (n / tl.maximum(n - 1.0, 1.0))
                m = old_mean.to(tl.float64)
                v = old_var.to(tl.float64)
                tl.store(running_mean_ptr + c, _round_to(m + factor * (mean64 - m), old_mean), mask=c_ok)
                tl.store(running_var_ptr + c, _round_to(v + factor * (unbiased - v), old_var), mask=c_ok)
            mean = mean64.to(acc_type)
            invstd = _rsqrt(var + eps64, True).to(acc_type)
        else:
            mean = _compute_type(tl.load(running_mean_ptr + c, mask=c_ok, other=0.0), FP64)
            var = _compute_type(tl.load(running_var_ptr + c, mask=c_ok, other=1.0), FP64)
            invstd = _rsqrt(var + eps, FP64)
        scale, shift = _affine(weight_ptr, bias_ptr, mean, invstd, c, c_ok, HAS_WEIGHT, HAS_BIAS, FP64)
        tl.store(mean_ptr + c, mean, mask=c_ok)
        tl.store(invstd_ptr + c, invstd, mask=c_ok)
        tl.store(scale_ptr + c, scale, mask=c_ok)
        tl.store(shift_ptr + c, shift, mask=c_ok)


@triton.jit
def bn_finish_backward_kernel(sum_dz_ptr, sum_dzx_ptr, weight_ptr, bias_ptr, invstd_ptr, mean_ptr, scale_ptr,
                              shift_ptr, coef_z_ptr, coef_0_ptr, grad_weight_ptr, grad_bias_ptr, C, splits,
                              positions, BATCH_STATS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                              HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
                              FP64: tl.constexpr):
    """Per channel, from the partial sums: scale and shift again (for the input-gradient pass), BatchNorm's
    input-gradient coefficients (dx = scale * dz + coef_z * z + coef_0, the means over the batch folded in;
    zeros with fixed statistics) and the weight and bias gradients (stored in their own dtype)."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    sum_dz = _sum_splits(sum_dz_ptr, c, c_ok, splits, C, BLOCK_S, BLOCK_C, FP64)
    sum_dzx = _sum_splits(sum_dzx_ptr, c, c_ok, splits, C, BLOCK_S, BLOCK_C, FP64)
    invstd = tl.load(invstd_ptr + c, mask=c_ok)
    mean = tl.load(mean_ptr + c, mask=c_ok)
    scale, shift = _affine(weight_ptr, bias_ptr, mean, invstd, c, c_ok, HAS_WEIGHT, HAS_BIAS, FP64)
    tl.store(scale_ptr + c, scale, mask=c_ok)
    tl.store(shift_ptr + c, shift, mask=c_ok)
    if BATCH_STATS:  # batch statistics depend on x: BatchNorm's full input gradient
        # dx = scale * (dz - mean(dz) - xhat * mean(dz * xhat)), xhat = (z - bias) / weight: no scale * invstd^2,
        # which underflows for inputs near 1e20.
        coef_z = -invstd * (sum_dzx * invstd) / positions
        coef_0 = -scale * sum_dz / positions
        if HAS_BIAS:
            coef_0 = coef_0 - coef_z * _compute_type(tl.load(bias_ptr + c, mask=c_ok), FP64)
        tl.store(coef_z_ptr + c, coef_z, mask=c_ok)
        tl.store(coef_0_ptr + c, coef_0, mask=c_ok)
    else:
        tl.store(coef_z_ptr + c, tl.zeros_like(sum_dz), mask=c_ok)
        tl.store(coef_0_ptr + c, tl.zeros_like(sum_dz), mask=c_ok)
    tl.store(grad_weight_ptr + c, (sum_dzx * invstd).to(grad_weight_ptr.dtype.element_ty), mask=c_ok)
    tl.store(grad_bias_ptr + c, sum_dz.to(grad_bias_ptr.dtype.element_ty), mask=c_ok)


@triton.jit
def _flat_tile(R, K, C, CL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, INT64: tl.constexpr):
    """A [BLOCK_R, BLOCK_K] tile of the storage seen as [R, K]: offsets, mask, and the channel of each row
    (NCHW, [BLOCK_R, 1]: one modulo per row) or column (channels_last, [1, BLOCK_K])."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    if INT64:
        r = r.to(tl.int64)
    offsets = (r * K)[:, None] + k[None, :]
    mask = (r < R)[:, None] & (k < K)[None, :]
    if CL:
        c = k[None, :]
        c_ok = (k < K)[None, :]
    else:
        c = (r % C)[:, None]
        c_ok = (r < R)[:, None]
    return offsets, mask, c, c_ok


@triton.jit
def bn_act_forward_kernel(x_ptr, scale_ptr, shift_ptr, y_ptr, R, K, C, ACT: tl.constexpr,
                          CL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, INT64: tl.constexpr,
                          FP64: tl.constexpr, FAST: tl.constexpr):
    """y = f(x * scale_c + shift_c): the normalisation and affine folded into one multiply-add."""
    offsets, mask, c, c_ok = _flat_tile(R, K, C, CL, BLOCK_R, BLOCK_K, INT64)
    scale = tl.load(scale_ptr + c, mask=c_ok)
    shift = tl.load(shift_ptr + c, mask=c_ok)
    x = _compute_type(tl.load(x_ptr + offsets, mask=mask), FP64)
    z = x * scale + shift
    tl.store(y_ptr + offsets, _forward_math(z, ACT, FAST).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def bn_act_backward_input_kernel(dy_ptr, x_ptr, scale_ptr, shift_ptr, coef_dz_ptr, coef_z_ptr, coef_0_ptr,
                                 dx_ptr, R, K, C, ACT: tl.constexpr,
                                 CL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
                                 INT64: tl.constexpr, FP64: tl.constexpr, FAST: tl.constexpr):
    """dx = coef_dz_c * dz + coef_z_c * z + coef_0_c, z = x * scale_c + shift_c: BatchNorm's input gradient with
    its per-channel means already folded into the coefficients."""
    offsets, mask, c, c_ok = _flat_tile(R, K, C, CL, BLOCK_R, BLOCK_K, INT64)
    scale = tl.load(scale_ptr + c, mask=c_ok)
    shift = tl.load(shift_ptr + c, mask=c_ok)
    coef_dz = tl.load(coef_dz_ptr + c, mask=c_ok)
    coef_z = tl.load(coef_z_ptr + c, mask=c_ok)
    coef_0 = tl.load(coef_0_ptr + c, mask=c_ok)
    x = _compute_type(tl.load(x_ptr + offsets, mask=mask), FP64)
    dy = _compute_type(tl.load(dy_ptr + offsets, mask=mask), FP64)
    z = x * scale + shift
    dx = coef_dz * _activation_grad(dy, z, ACT, FAST) + coef_z * z + coef_0
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
