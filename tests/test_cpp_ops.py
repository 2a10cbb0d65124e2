"""The compiled ops (csrc/, torch.ops.swishkernels.*) called directly: numerics against float64 and
against ATen's silu/mish, layouts, threads, every CPU instruction set, argument errors. The tests
marked `gpu` run the CUDA kernels and are skipped without a GPU."""
import importlib.util
import os
import subprocess
import sys
from typing import Callable, NamedTuple

import pytest
import torch
import torch.nn.functional as F

from helpers import LOWER_CAPABILITIES, run_with_lower_capability

# Skipped where the extension was deliberately not built (SWISHKERNELS_SKIP_EXT=1); a built one that
# fails to import is an error here, not a skip, so a broken build cannot pass unnoticed.
if importlib.util.find_spec("swishkernels._C") is None:
    pytest.skip("swishkernels._C is not built (`pip install --no-build-isolation -e .` builds it)",
                allow_module_level=True)
import swishkernels._C  # noqa: E402,F401  (registers torch.ops.swishkernels)

# Every test here runs with uninitialised memory poisoned (see conftest.poisoned_allocations).
pytestmark = pytest.mark.usefixtures("poisoned_allocations")

ops = torch.ops.swishkernels
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
ODD_SIZES = (1, 7, 33, 1023, 4097)  # none a multiple of any vector width


class Activation(NamedTuple):
    forward: Callable
    backward: Callable
    forward_inplace: Callable
    aten_forward: Callable
    aten_backward: Callable


ACTIVATIONS = {
    "swish": Activation(ops.swish_forward, ops.swish_backward, ops.swish_forward_inplace,
                        F.silu, torch.ops.aten.silu_backward),
    "mish": Activation(ops.mish_forward, ops.mish_backward, ops.mish_forward_inplace,
                       F.mish, torch.ops.aten.mish_backward),
}


@pytest.fixture(params=sorted(ACTIVATIONS))
def act(request):
    return ACTIVATIONS[request.param]


def rand(shape, dtype, gen, scale=4.0, device="cpu"):
    """Seeded normal values spread over the activations' curved region (never zeros)."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    return x.to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", ODD_SIZES)
def test_matches_float64_reference(act, dtype, size, gen):
    x, dy = rand(size, dtype, gen), rand(size, dtype, gen, scale=1.0)
    expected = act.aten_forward(x.double()).to(dtype)
    expected_grad = act.aten_backward(dy.double(), x.double()).to(dtype)
    torch.testing.assert_close(act.forward(x), expected)
    torch.testing.assert_close(act.backward(dy, x), expected_grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_swish_is_bitwise_aten_silu(dtype, gen, restore_threads):
    # Same expression as ATen's CPU silu and silu_backward, computed in the same type with the same
    # vector exp (our copy for ATen's CPU capability), so equal bit for bit. ATen computes up to two
    # vectors of leftovers with std::exp, which may round differently: the size is whole vectors,
    # on one thread so that ATen's loop sees one piece.
    torch.set_num_threads(1)
    x, dy = rand(64 * 1024, dtype, gen), rand(64 * 1024, dtype, gen, scale=1.0)
    assert torch.equal(ops.swish_forward(x), F.silu(x))
    assert torch.equal(ops.swish_backward(dy, x), torch.ops.aten.silu_backward(dy, x))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mish_is_close_to_aten_mish(dtype, gen):
    # Not bit for bit: one exp and a division replace ATen's exp, log1p and tanh
    # (csrc/activations.h). Within the default tolerances: measured at most 5 ulp from float64
    # on fp32 (ATen's: 3).
    x, dy = rand(64 * 1024, dtype, gen), rand(64 * 1024, dtype, gen, scale=1.0)
    torch.testing.assert_close(ops.mish_forward(x), F.mish(x))
    torch.testing.assert_close(ops.mish_backward(dy, x), torch.ops.aten.mish_backward(dy, x))


def special_values(dtype):
    info = torch.finfo(dtype)
    values = [info.max, -info.max, float("inf"), -float("inf"), float("nan"),
              info.smallest_normal, -info.smallest_normal, info.smallest_normal / 8,
              -info.smallest_normal / 8, 0.0, -0.0, 1.0, -1.0, 19.5, 20.0, 20.5, -20.0, 44.0, 89.0,
              -89.0, -104.0, 710.0, -710.0, -746.0, 1e4, -1e4, 1e30, -1e30, -0.5]
    x = torch.tensor(values, dtype=torch.float64).clamp(-info.max, info.max).to(dtype)
    # 29 values, coprime with every vector width: repeated, each lands in every lane of a vector,
    # and the last ones in a partial vector.
    return x.repeat(70)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_special_values_match_aten(act, dtype):
    x = special_values(dtype)
    torch.testing.assert_close(act.forward(x), act.aten_forward(x), equal_nan=True)
    for scale in (1.5, -0.25):
        dy = torch.full_like(x, scale)
        torch.testing.assert_close(act.backward(dy, x), act.aten_backward(dy, x), equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_more_threads_give_identical_bits(act, dtype, gen, restore_threads):
    n = 3 * 32768 + 17  # several of at::parallel_for's grains, so two threads split it
    x, dy = rand(n, dtype, gen), rand(n, dtype, gen, scale=1.0)
    torch.set_num_threads(1)
    one = (act.forward(x), act.backward(dy, x))
    torch.set_num_threads(2)
    two = (act.forward(x), act.backward(dy, x))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


# ----------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("shape", [(0,), (2, 0, 3), ()])
def test_empty_and_zero_dim(act, shape, gen):
    x = rand(shape, torch.float32, gen)
    y = act.forward(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, act.aten_forward(x))
    torch.testing.assert_close(act.backward(torch.ones_like(x), x),
                               act.aten_backward(torch.ones_like(x), x))
    act.forward_inplace(x)
    torch.testing.assert_close(x, y)


def make_layout(layout, dtype, gen):
    """A (2, 6, 5, 7) tensor in the given layout (values from `gen`)."""
    base = rand((2, 6, 5, 7), dtype, gen)
    if layout == "contiguous":
        return base
    if layout == "channels_last":
        return base.contiguous(memory_format=torch.channels_last)
    if layout == "permuted":  # dense, strides in no standard order
        return rand((5, 2, 7, 6), dtype, gen).permute(1, 3, 0, 2)
    if layout == "sliced":  # not dense: every other element of a larger tensor
        return rand((2, 12, 5, 7), dtype, gen)[:, ::2]
    if layout == "transposed_slice":  # not dense: part of the stride-1 dim of a transpose
        return rand((2, 6, 7, 10), dtype, gen).transpose(2, 3)[:, :, :5]
    raise ValueError(layout)


DENSE_LAYOUTS = ("contiguous", "channels_last", "permuted")
LAYOUTS = DENSE_LAYOUTS + ("sliced", "transposed_slice")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_forward_layouts(act, layout, dtype, gen):
    x = make_layout(layout, dtype, gen)
    y = act.forward(x)
    if layout in DENSE_LAYOUTS:
        assert y.stride() == x.stride()  # e.g. channels_last stays channels_last
    else:
        assert y.is_contiguous()
    torch.testing.assert_close(y, act.aten_forward(x))


@pytest.mark.parametrize("x_layout, grad_layout", [
    ("contiguous", "channels_last"), ("channels_last", "contiguous"),
    ("channels_last", "sliced"), ("sliced", "channels_last"), ("permuted", "permuted"),
])
def test_backward_grad_in_another_layout(act, x_layout, grad_layout, gen):
    x = make_layout(x_layout, torch.float32, gen)
    dy = make_layout(grad_layout, torch.float32, gen)
    dx = act.backward(dy, x)
    if x_layout in DENSE_LAYOUTS:
        assert dx.stride() == x.stride()
    else:
        assert dx.is_contiguous()
    torch.testing.assert_close(dx, act.aten_backward(dy, x))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inplace_writes_exactly_the_input(act, layout, gen):
    # The view lives in a NaN-filled buffer: its elements must all be written, no others touched.
    view = make_layout(layout, torch.float32, gen)
    buffer = torch.full((view.untyped_storage().nbytes() // 4 + 64,), float("nan"))
    x = buffer.as_strided(view.shape, view.stride(), 32)
    x.copy_(view)
    expected = act.aten_forward(view)
    assert act.forward_inplace(x) is None
    torch.testing.assert_close(x, expected)
    untouched = torch.ones_like(buffer, dtype=torch.bool)
    untouched.as_strided(view.shape, view.stride(), 32).fill_(False)
    assert buffer[untouched].isnan().all()


# -------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("dtype, name", [(torch.int32, "Int"), (torch.bool, "Bool"),
                                         (torch.complex64, "ComplexFloat")])
def test_unsupported_dtype_is_named(act, dtype, name):
    x = torch.ones(5, dtype=dtype)
    pattern = f"unsupported dtype {name} \\(expected float16, bfloat16, float32 or float64\\)"
    with pytest.raises(RuntimeError, match=pattern):
        act.forward(x)
    with pytest.raises(RuntimeError, match=pattern):
        act.backward(x, x)
    with pytest.raises(RuntimeError, match=pattern):
        act.forward_inplace(x)


def test_backward_rejects_mismatched_grad(act):
    x = torch.randn(4, 5)
    with pytest.raises(RuntimeError, match="grad_output has dtype Double but x has dtype Float"):
        act.backward(x.double(), x)
    with pytest.raises(RuntimeError,
                       match=r"grad_output has shape \[5, 4\] but x has shape \[4, 5\]"):
        act.backward(x.t().contiguous(), x)


def test_inplace_rejects_overlapping_input(act):
    x = torch.randn(1, 3).expand(4, 3)  # four rows sharing one row of memory
    with pytest.raises(RuntimeError, match="refers to a single memory location"):
        act.forward_inplace(x)


# -------------------------------------------------------------------------------------- autograd

# The library alone, without the Python package, differentiates its ops (csrc/autograd.cpp): no
# Python runs per activation in a training step. Loaded by path so swishkernels/ops.py never runs.
_LIBRARY_AUTOGRAD = """
import sys, torch, torch.nn.functional as F
torch.ops.load_library(sys.argv[1])
ops = torch.ops.swishkernels
for name, fn, ref in (("swish", ops.swish_forward, F.silu), ("mish", ops.mish_forward, F.mish)):
    x = (torch.randn(257, dtype=torch.float64) * 4).requires_grad_()
    v = torch.randn(257, dtype=torch.float64)
    grads = []
    for f in (fn, ref):
        y = f(x)
        (g,) = torch.autograd.grad(y, x, v, create_graph=True)
        (gg,) = torch.autograd.grad(g.sum(), x)
        grads.append((y, g, gg, type(y.grad_fn).__name__))
    (y, g, gg, node), (y_ref, g_ref, gg_ref, _) = grads
    assert node == "CppFunction", (name, node)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(g, g_ref)
    torch.testing.assert_close(gg, gg_ref)
print("ok")
"""


def test_library_alone_has_first_and_second_derivatives():
    library = swishkernels._C.__file__
    run = subprocess.run([sys.executable, "-c", _LIBRARY_AUTOGRAD, library], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


# --------------------------------------------------------------------------- CPU instruction sets

# ATEN_CPU_CAPABILITY lowers the instruction set ATen dispatches to, and this extension follows it
# (csrc/cpu/device_kernels.cpp), so each lower copy of the kernels can be tested on this CPU.


@pytest.mark.slow
@pytest.mark.skipif("SWISHKERNELS_LOWERED_CAPABILITY" in os.environ, reason="already lowered")
@pytest.mark.parametrize("capability", LOWER_CAPABILITIES)
def test_numerics_with_lower_cpu_capability(capability):
    run_with_lower_capability(capability, __file__, "reference or aten or special or threads")


# ------------------------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_aten(act, dtype, gen):
    x = rand(3 * 4097, dtype, gen, device="cuda")
    dy = rand(3 * 4097, dtype, gen, scale=1.0, device="cuda")
    torch.testing.assert_close(act.forward(x), act.aten_forward(x))
    torch.testing.assert_close(act.backward(dy, x), act.aten_backward(dy, x))
    expected = act.aten_forward(x)
    act.forward_inplace(x)
    torch.testing.assert_close(x, expected)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("offset", (1, 3))
def test_cuda_misaligned_views(act, dtype, offset, gen):
    # A view starting `offset` elements into its storage defeats 16-byte alignment: inputs and the
    # fresh output then disagree modulo 16 and the kernel must take its one-element path.
    n = 4097
    x = rand(n + offset, dtype, gen, device="cuda")[offset:]
    dy = rand(n + offset, dtype, gen, scale=1.0, device="cuda")[offset:]
    torch.testing.assert_close(act.forward(x), act.aten_forward(x))
    torch.testing.assert_close(act.backward(dy, x), act.aten_backward(dy, x))
    aligned_dy = dy.clone()  # grad aligned, x not
    torch.testing.assert_close(act.backward(aligned_dy, x), act.aten_backward(aligned_dy, x))
    expected = act.aten_forward(x)
    act.forward_inplace(x)  # in and out misaligned alike: peeled head, then 16-byte packs
    torch.testing.assert_close(x, expected)


@pytest.mark.gpu
def test_cuda_channels_last(act, gen):
    x = rand((4, 16, 9, 11), torch.float16, gen, device="cuda").contiguous(
        memory_format=torch.channels_last)
    dy = rand((4, 16, 9, 11), torch.float16, gen, scale=1.0, device="cuda")
    y, dx = act.forward(x), act.backward(dy, x)
    assert y.stride() == x.stride() and dx.stride() == x.stride()
    torch.testing.assert_close(y, act.aten_forward(x))
    torch.testing.assert_close(dx, act.aten_backward(dy, x))


@pytest.mark.gpu
def test_cuda_rejects_grad_on_another_device(act):
    x = torch.randn(8, device="cuda")
    with pytest.raises(RuntimeError, match="grad_output is on cpu but x is on cuda:0"):
        act.backward(torch.randn(8), x)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=str)
def test_cuda_past_2_to_the_31_elements(dtype):
    n = 2**31 + 4097
    needed = 3 * n * 2 + (2 << 30)  # x, ours, ATen's, and room for comparing pieces
    if torch.cuda.mem_get_info()[0] < needed:
        pytest.skip(f"needs {needed / 2**30:.1f} GiB of free GPU memory")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, generator=gen, device="cuda", dtype=dtype).mul_(4)
    act = ACTIVATIONS["swish"]
    for ours, theirs in ((lambda: act.forward(x), lambda: act.aten_forward(x)),
                         (lambda: act.backward(x, x), lambda: act.aten_backward(x, x))):
        got = ours()
        expected = theirs()
        for start in range(0, n, 1 << 26):  # in pieces: comparing the whole needs more memory
            torch.testing.assert_close(got[start:start + (1 << 26)],
                                       expected[start:start + (1 << 26)])
        del got, expected
