"""The README's claim, checked bit for bit: on the cpu backend, Swish and its gradient are exactly
F.silu's and F.silu's backward (torch.equal, not a tolerance) for dense inputs whose incoming gradient
has the input's layout, at every size, in every floating dtype.

Why it holds: csrc/cpu/vec_kernels.cpp runs ATen's expression in ATen's loop (two vectors at a time
with the vector exp of ATen's CPU capability, then the leftovers in scalar code with libm's exp).
What does not hold is tested at the end: there ATen takes another path and we only match closely.
"""
import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

import swishkernels as sk
from helpers import LOWER_CAPABILITIES, randn, run_with_lower_capability

# As in test_cpp_ops.py: skipped only where the extension was deliberately not built.
if importlib.util.find_spec("swishkernels._C") is None:
    pytest.skip("swishkernels._C is not built (`pip install --no-build-isolation -e .` builds it)",
                allow_module_level=True)

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# Tails of many lengths for every vector width (fp64 on AVX512 has 8 lanes, bf16 32), whole
# vectors, and one size past at::internal::GRAIN_SIZE (32768), where ATen may split the work.
SIZES = [1, 7, 15, 16, 17, 31, 33, 63, 64, 65, 127, 1000, 4097, 3 * 32768 + 17]


def swish_and_grad(fn, x, dy):
    x = x.detach().requires_grad_()
    y = fn(x)
    (dx,) = torch.autograd.grad(y, x, dy)
    return y.detach(), dx


def ours(x):
    return sk.swish(x, backend="cpu")


def assert_bitwise(got, expected):
    for g, e in zip(got, expected):
        mismatched = (g != e).sum().item()
        assert torch.equal(g, e), f"{mismatched} of {e.numel()} elements differ"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", SIZES)
def test_flat_swish_is_bitwise_f_silu(size, dtype, gen, restore_threads):
    # One thread: ATen then walks the tensor as one piece. (Several threads: the next test.)
    torch.set_num_threads(1)
    x, dy = randn(size, dtype=dtype, gen=gen), randn(size, dtype=dtype, gen=gen, scale=1.0)
    assert_bitwise(swish_and_grad(ours, x, dy), swish_and_grad(F.silu, x, dy))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_threads_do_not_change_our_bits(dtype, gen, restore_threads):
    # On two threads ATen cuts the tensor at numel / 2 and computes the end of each piece in scalar
    # code, so F.silu's own bits can change with the thread count. Ours are cut at whole vectors and
    # stay those of one-thread F.silu.
    size = 3 * 32768 + 17
    x, dy = randn(size, dtype=dtype, gen=gen), randn(size, dtype=dtype, gen=gen, scale=1.0)
    torch.set_num_threads(1)
    one_thread_silu = swish_and_grad(F.silu, x, dy)
    torch.set_num_threads(2)
    assert_bitwise(swish_and_grad(ours, x, dy), one_thread_silu)


def _layouts(gen, dtype):
    nchw = randn(3, 5, 7, 9, dtype=dtype, gen=gen)
    return {
        "channels_last": nchw.contiguous(memory_format=torch.channels_last),
        "transposed": randn(9, 13, dtype=dtype, gen=gen).t(),
        "permuted": nchw.permute(2, 0, 3, 1),
        "size1_dims": randn(4, 1, 6, 1, dtype=dtype, gen=gen),
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "permuted", "size1_dims"])
def test_dense_layouts_with_gradient_in_the_same_layout(layout, dtype, gen):
    x = _layouts(gen, dtype)[layout]
    dy = torch.empty_like(x).copy_(randn(*x.shape, dtype=dtype, gen=gen, scale=1.0))
    assert dy.stride() == x.stride()
    assert_bitwise(swish_and_grad(ours, x, dy), swish_and_grad(F.silu, x, dy))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_inplace_and_module_forms(dtype, gen):
    x = randn(1000, dtype=dtype, gen=gen)
    expected = F.silu(x)
    assert torch.equal(sk.Swish(backend="cpu")(x), expected)
    y = x.clone()
    sk.Swish(inplace=True, backend="cpu")(y)
    assert torch.equal(y, expected)


@pytest.mark.skipif("SWISHKERNELS_LOWERED_CAPABILITY" in os.environ, reason="already lowered")
@pytest.mark.parametrize("capability", LOWER_CAPABILITIES)
def test_bitwise_with_lower_cpu_capability(capability):
    # Each instruction set has its own vector width, so its own split between vector and scalar code.
    run_with_lower_capability(capability, __file__, "flat or same_layout")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_not_claimed_mixed_layouts_and_gapped_inputs_are_close(dtype, gen):
    # Not bit for bit, and the README says so: when the gradient's layout differs from the input's
    # (channels_last x, contiguous dy) or the input has gaps (a strided slice), ATen's TensorIterator
    # has no contiguous inner loop and computes every element in scalar code; we copy to one layout
    # and use the vector loop. Measured up to 4.8e-7 apart in fp32: within the default tolerances.
    x = randn(4, 6, 5, 7, dtype=dtype, gen=gen).contiguous(memory_format=torch.channels_last)
    dy = randn(4, 6, 5, 7, dtype=dtype, gen=gen, scale=1.0)
    torch.testing.assert_close(swish_and_grad(ours, x, dy), swish_and_grad(F.silu, x, dy))
    gapped = randn(40, 50, dtype=dtype, gen=gen)[:, ::2]
    dy = randn(40, 25, dtype=dtype, gen=gen, scale=1.0)
    torch.testing.assert_close(swish_and_grad(ours, gapped, dy), swish_and_grad(F.silu, gapped, dy))
