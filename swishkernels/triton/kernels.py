"""@triton.jit kernels: one flat 1-D grid over the storage of a dense tensor.

Math runs in fp32 (fp64 for fp64 inputs); loads and stores use the storage dtype. Every program
handles BLOCK consecutive elements; offsets are int64 only when the tensor is large enough to need it
(INT64 is a constexpr, so small tensors keep cheaper int32 index math).
"""
import triton
import triton.language as tl


@triton.jit
def _block_offsets(numel, BLOCK: tl.constexpr, INT64: tl.constexpr):
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    return offsets, offsets < numel


@triton.jit
def _compute_type(x, FP64: tl.constexpr):
    if FP64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def _sigmoid(x):
    # exp(-x) overflows to inf for very negative x, giving 1/inf = 0: the right limit, no NaN.
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh_softplus(x):
    # tanh(log(1 + e^x)) = n / (n + 2) with n = e^x (e^x + 2). The exponent is capped at 20 where the
    # result is already 1.0 in fp32 and fp64, so large x cannot overflow n into inf/inf = NaN.
    e = tl.exp(tl.minimum(x, 20.0))
    n = e * (e + 2.0)
    return n / (n + 2.0)


@triton.jit
def swish_forward_kernel(x_ptr, y_ptr, numel, BLOCK: tl.constexpr, INT64: tl.constexpr, FP64: tl.constexpr):
    offsets, mask = _block_offsets(numel, BLOCK, INT64)
    x = _compute_type(tl.load(x_ptr + offsets, mask=mask), FP64)
    y = x * _sigmoid(x)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def swish_backward_kernel(dy_ptr, x_ptr, dx_ptr, numel, BLOCK: tl.constexpr, INT64: tl.constexpr,
                          FP64: tl.constexpr):
    offsets, mask = _block_offsets(numel, BLOCK, INT64)
    x = _compute_type(tl.load(x_ptr + offsets, mask=mask), FP64)
    dy = _compute_type(tl.load(dy_ptr + offsets, mask=mask), FP64)
    s = _sigmoid(x)
    dx = dy * s * (1.0 + x * (1.0 - s))
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def mish_forward_kernel(x_ptr, y_ptr, numel, BLOCK: tl.constexpr, INT64: tl.constexpr, FP64: tl.constexpr):
    offsets, mask = _block_offsets(numel, BLOCK, INT64)
    x = _compute_type(tl.load(x_ptr + offsets, mask=mask), FP64)
    y = x * _tanh_softplus(x)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def mish_backward_kernel(dy_ptr, x_ptr, dx_ptr, numel, BLOCK: tl.constexpr, INT64: tl.constexpr,
                         FP64: tl.constexpr):
    offsets, mask = _block_offsets(numel, BLOCK, INT64)
    x = _compute_type(tl.load(x_ptr + offsets, mask=mask), FP64)
    dy = _compute_type(tl.load(dy_ptr + offsets, mask=mask), FP64)
    t = _tanh_softplus(x)
    dx = dy * (t + x * _sigmoid(x) * (1.0 - t * t))
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
