"""@triton.jit kernels: a grid-stride loop over the flat storage of a dense tensor.

Math runs in fp32 (fp64 for fp64 inputs); loads and stores use the storage dtype. The storage is cut
into BLOCK-element tiles: the full tiles are walked without a mask by a grid-stride loop (a mask
`offsets < numel` with numel not a multiple of 16 would lose its constancy and make every access
scalar), and the one partial tile at the end is done masked by the last program. Offsets are int64
only when the tensor needs it (INT64 is a constexpr, so small tensors keep cheaper int32 index math).

FAST (fp32 math compiled for a GPU): exp and division by the hardware approximations (ex2.approx.ftz,
rcp.approx.ftz: about 2 ulp in fp32, far below fp16/bf16 rounding and within fp32's test tolerances) instead
of the range-checked exp and the IEEE-style division, which cost ~12 instructions per sigmoid and put fp16
Mish over its issue budget (tools/gpu_code.py). The interpreter cannot run libdevice, so on a CPU FAST is
off and the same formulas run with tl.exp and `/`; tests/test_gpu.py checks the FAST path on a GPU.
"""
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice  # used only when FAST (compiled for a GPU)

# Activation selectors (constexpr): one loop, four kernels.
SWISH = tl.constexpr(0)
MISH = tl.constexpr(1)


@triton.jit
def _compute_type(x, FP64: tl.constexpr):
    if FP64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def _exp(x, FAST: tl.constexpr):
    if FAST:
        return libdevice.fast_expf(x)
    else:
        return tl.exp(x)


@triton.jit
def _div(a, b, FAST: tl.constexpr):
    if FAST:
        return libdevice.fast_dividef(a, b)  # b = inf gives 0, as 1/inf should
    else:
        return a / b


@triton.jit
def _sigmoid(x, FAST: tl.constexpr):
    # exp(-x) overflows to inf for very negative x, giving 1/inf = 0: the right limit, no NaN.
    return _div(1.0, 1.0 + _exp(-x, FAST), FAST)


@triton.jit
def _mish_parts(x, FAST: tl.constexpr):
    """(tanh(softplus(x)), sigmoid(x)) from one exponential. tanh(log(1 + e^x)) = n / (n + 2) with
    n = e^x (e^x + 2) and sigmoid(x) = e^x / (1 + e^x). The exponent is capped at 20, where both are already
    1.0 in fp32 and fp64, so large x cannot overflow n into inf/inf = NaN."""
    e = _exp(tl.minimum(x, 20.0), FAST)
    n = e * (e + 2.0)
    return _div(n, n + 2.0, FAST), _div(e, 1.0 + e, FAST)


@triton.jit
def _forward_math(x, ACT: tl.constexpr, FAST: tl.constexpr):
    if ACT == SWISH:
        return x * _sigmoid(x, FAST)
    else:
        t, _ = _mish_parts(x, FAST)
        return x * t


@triton.jit
def _backward_math(dy, x, ACT: tl.constexpr, FAST: tl.constexpr):
    if ACT == SWISH:
        s = _sigmoid(x, FAST)
        return dy * s * (1.0 + x * (1.0 - s))
    else:
        t, s = _mish_parts(x, FAST)
        return dy * (t + x * s * (1.0 - t * t))


@triton.jit
def _tile(tile, BLOCK: tl.constexpr, INT64: tl.constexpr):
    if INT64:
        tile = tl.cast(tile, tl.int64)
    return tile * BLOCK + tl.arange(0, BLOCK)


@triton.jit
def _elementwise(dy_ptr, x_ptr, out_ptr, numel, ACT: tl.constexpr, BACKWARD: tl.constexpr, BLOCK: tl.constexpr,
                 INT64: tl.constexpr, FP64: tl.constexpr, FAST: tl.constexpr):
    """out = f(x) (forward) or dy * f'(x) (backward; dy_ptr is unused in forward)."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    full_tiles = numel // BLOCK
    for tile in range(pid, full_tiles, programs):  # the hot loop: no mask, 16-byte accesses
        offsets = _tile(tile, BLOCK, INT64)
        x = _compute_type(tl.load(x_ptr + offsets), FP64)
        if BACKWARD:
            out = _backward_math(_compute_type(tl.load(dy_ptr + offsets), FP64), x, ACT, FAST)
        else:
            out = _forward_math(x, ACT, FAST)
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty))
    if pid == programs - 1:  # the partial tile (numel % BLOCK elements), masked, once
        offsets = _tile(full_tiles, BLOCK, INT64)
        mask = offsets < numel
        x = _compute_type(tl.load(x_ptr + offsets, mask=mask), FP64)
        if BACKWARD:
            out = _backward_math(_compute_type(tl.load(dy_ptr + offsets, mask=mask), FP64), x, ACT, FAST)
        else:
            out = _forward_math(x, ACT, FAST)
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def swish_forward_kernel(x_ptr, y_ptr, numel, BLOCK: tl.constexpr, INT64: tl.constexpr, FP64: tl.constexpr,
                         FAST: tl.constexpr):
    _elementwise(x_ptr, x_ptr, y_ptr, numel, SWISH, False, BLOCK, INT64, FP64, FAST)


@triton.jit
def swish_backward_kernel(dy_ptr, x_ptr, dx_ptr, numel, BLOCK: tl.constexpr, INT64: tl.constexpr,
                          FP64: tl.constexpr, FAST: tl.constexpr):
    _elementwise(dy_ptr, x_ptr, dx_ptr, numel, SWISH, True, BLOCK, INT64, FP64, FAST)


@triton.jit
def mish_forward_kernel(x_ptr, y_ptr, numel, BLOCK: tl.constexpr, INT64: tl.constexpr, FP64: tl.constexpr,
                         FAST: tl.constexpr):
    _elementwise(x_ptr, x_ptr, y_ptr, numel, MISH, False, BLOCK, INT64, FP64, FAST)


@triton.jit
def mish_backward_kernel(dy_ptr, x_ptr, dx_ptr, numel, BLOCK: tl.constexpr, INT64: tl.constexpr,
                          FP64: tl.constexpr, FAST: tl.constexpr):
    _elementwise(dy_ptr, x_ptr, dx_ptr, numel, MISH, True, BLOCK, INT64, FP64, FAST)
