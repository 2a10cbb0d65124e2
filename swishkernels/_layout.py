"""Memory-layout rules shared by every backend.

Kernels run over the flat storage of a dense tensor, so any dense layout (contiguous, channels_last,
any permutation) is used as it is and the output gets the same strides. Only a non-dense input (a
slice with gaps, an expanded tensor) is copied once into a contiguous tensor.
"""
import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_dtype(x: torch.Tensor, op_name: str) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"swishkernels.{op_name}: unsupported dtype {x.dtype} "
            f"(supported: float16, bfloat16, float32, float64)"
        )


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype kernels compute and accumulate in: float64 for float64 tensors, float32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def is_dense(x: torch.Tensor) -> bool:
    """True when the elements of x fill a gap-free block of memory exactly once, in any dimension
    order (contiguous, channels_last, transposed): the kernels can then walk that block as 1-D."""
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return True  # the common layouts, answered in C++
    # Dense means: ordered by stride, the strides are 1, n_a, n_a * n_b, ... Checked without sorting
    # (torch.compile cannot sort symbolic strides, and would graph-break here for every new shape):
    # each dimension's stride is 1 or the extent (stride * size) of another one, so extents multiply
    # sizes along chains of dimensions, and the largest extent is numel only when one chain holds
    # them all.
    dims = [(size, stride) for size, stride in zip(x.shape, x.stride()) if size != 1]
    extents = [size * stride for size, stride in dims]
    for i, (_, stride) in enumerate(dims):
        if stride != 1 and not any(stride == extent for j, extent in enumerate(extents) if j != i):
            return False
    return not extents or max(extents) == x.numel()


def dense(x: torch.Tensor) -> torch.Tensor:
    return x if is_dense(x) else x.contiguous()


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    # Strides of size-1 dimensions never address memory, so they may differ freely.
    return all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def like(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`grad` in x's dtype and memory layout, so both can be walked as one flat storage.
    `x` must already be dense."""
    if grad.dtype == x.dtype and is_dense(grad) and _same_layout(grad, x):
        return grad
    return torch.empty_like(x).copy_(grad)


def channel_geometry(x: torch.Tensor, dim: int = 1):
    """(C, inner, J) for a dense x seen as [outer, C, inner] in memory order (J = outer * inner, the
    positions per channel). NCHW gives inner = H*W; channels_last gives inner = 1."""
    channels = x.size(dim)
    positions = x.numel() // channels if channels else 0
    inner = x.stride(dim) if channels > 1 else positions  # one channel: the whole tensor is "inner"
    return channels, inner, positions
