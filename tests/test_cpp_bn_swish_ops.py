"""The compiled BatchNorm+activation ops (csrc/bn_swish_ops.cpp, torch.ops.swishkernels.bn_swish_* and
bn_mish_*) called directly: against the reference backend's math in float64 for every dtype and layout, bitwise
equal results on any number of threads, every CPU instruction set, argument errors. Module-level behaviour (vs
nn.BatchNorm2d + F.silu / F.mish, gradcheck, opcheck) is covered for the `cpu` backend by tests/test_bn_swish.py."""
import importlib.util
import os

import pytest
import torch

from helpers import LOWER_CAPABILITIES, run_with_lower_capability

if importlib.util.find_spec("swishkernels._C") is None:
    pytest.skip("swishkernels._C is not built (`pip install --no-build-isolation -e .` builds it)",
                allow_module_level=True)
from swishkernels import bn_swish_ops  # noqa: E402

# Every test here runs with uninitialised memory poisoned (see conftest.poisoned_allocations).
pytestmark = pytest.mark.usefixtures("poisoned_allocations")

CPU = bn_swish_ops._OPS["cpu"]["swish"]
REFERENCE = bn_swish_ops._OPS["reference"]["swish"]
ACTIVATIONS = bn_swish_ops.ACTIVATIONS
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# (shape, channels_last): short rows (channels_last: inner = 1), rows reduced one by one (inner = 49),
# rows split in chunks (inner = 9000 > the kernels' 8192), one channel, odd sizes. channels_last runs
# across channels in vectors: C = 37 has whole vectors and a partial one for every vector width, and
# C = 300 spans two groups of the kernels' per-channel accumulators (256 channels each).
SHAPES = [((3, 5, 7, 7), False), ((3, 5, 7, 7), True), ((2, 3, 90, 100), False),
          ((2, 3, 90, 100), True), ((4, 1, 3, 5), False), ((1, 7, 1, 1), False), ((2, 3, 40), False),
          ((5, 300, 2, 2), False), ((3, 37, 17, 23), False), ((3, 37, 17, 23), True),
          ((2, 300, 3, 5), True)]


def _inputs(shape, channels_last, dtype, gen):
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 0.5).to(dtype)
    dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    per_channel = [(torch.rand(shape[1], generator=gen, dtype=torch.float64) + 0.5).to(acc)
                   for _ in range(6)]
    return x, dy, per_channel


def _run_all(ops, x, dy, pc):
    return (*ops.stats(x, pc[0], pc[5]), ops.forward(x, pc[0], pc[1]),
            *ops.backward_reduce(dy, x, pc[0], pc[1], pc[2]),
            ops.backward_input(dy, x, *pc[:5]))


def _tolerance(dtype):
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-10}
    if dtype == torch.float32:
        return {"rtol": 1.3e-6, "atol": 1e-5}  # torch.testing's float32 defaults
    # fp16/bf16 outputs: the fp32 math rounded once to the storage dtype.
    return {"rtol": 1e-3 if dtype == torch.float16 else 8e-3, "atol": 1e-5}


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, channels_last", SHAPES, ids=[f"{s}-{'cl' if c else 'nchw'}" for s, c in SHAPES])
def test_matches_reference_in_float64(dtype, shape, channels_last, activation, gen):
    """Every op against the reference backend run in float64 on the same (rounded) values."""
    x, dy, pc = _inputs(shape, channels_last, dtype, gen)
    got = _run_all(bn_swish_ops._OPS["cpu"][activation], x, dy, pc)
    want = _run_all(bn_swish_ops._OPS["reference"][activation], x.double(), dy.double(), [t.double() for t in pc])
    for index, (g, w) in enumerate(zip(got, want)):
        full_size = index in (2, 5)
        assert g.dtype == (dtype if full_size else pc[0].dtype)
        if full_size:
            assert g.shape == x.shape and g.stride() == x.stride()
            torch.testing.assert_close(g.double(), w.to(dtype).double(), **_tolerance(dtype),
                                       msg=lambda m: f"output {index}: {m}")
        elif dtype == torch.float64:
            torch.testing.assert_close(g, w, **_tolerance(dtype), msg=lambda m: f"output {index}: {m}")
        else:
            # Per-channel sums over terms computed in fp32, each off by a few roundings of its own
            # size: where a channel's sum cancels (sum(x - shift) ~ 0), that error is measured against
            # the terms, not the sum. Still far below one element's contribution (~1).
            magnitude = _term_magnitudes(x, dy, pc, activation)[{0: 0, 1: 1, 3: 2, 4: 3}[index]]
            error, allowed = (g.double() - w).abs(), 1e-5 + 1e-5 * w.abs() + 4 * 2.0**-24 * magnitude
            assert (error <= allowed).all(), f"output {index}: error {error.max():.3g} (allowed {allowed.min():.3g}+)"


def _term_magnitudes(x, dy, pc, activation):
    """Per channel, in float64: the sums of |term| of the two reductions of each of stats and
    backward_reduce (what the rounding of each fp32 term scales with)."""
    ref = bn_swish_ops._ReferenceImpl()
    x, dy, pc = x.double(), dy.double(), [t.double() for t in pc]
    d = (ref._view(x, x) - ref._per_channel(pc[0])) * ref._per_channel(pc[5])
    xv, _, dz = ref._dz(dy, x, pc[0], pc[1], activation)
    dz_xmu = dz * (xv - ref._per_channel(pc[2]))
    return [t.abs().sum((0, 2)) for t in (d, d.square(), dz, dz_xmu)]


# f(z) and dy * f'(z) over the whole range where they change (the float kernels have their own exp,
# csrc/cpu/vec_math.h: fast_exp), the ends where exp overflows or underflows, and inf/NaN.
SPECIAL_Z = [float("inf"), float("-inf"), float("nan"), 1e20, -1e20, 3e38, -3e38, 88.72, 88.73, -88.72, -88.73,
             -87.4, -87.3, -103.9, -104.5, 103.9, 104.5, 20.0, 20.5, 1e-40, -1e-40, 0.0, -0.0]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_activation_over_the_float_range_matches_pytorch(dtype, activation, channels_last, gen):
    """scale = 1, shift = 0 (z = x), coef_dz = 1, coef_z = coef_0 = 0 (dx = dz): the forward and the input
    gradient against F.silu / F.mish and their ATen backward in float64, rounded once to the dtype."""
    z = torch.cat([torch.linspace(-110, 110, 4409, dtype=torch.float64), torch.tensor(SPECIAL_Z, dtype=torch.float64)])
    x = z.to(dtype).reshape(1, 1, -1, 1).expand(2, 3, -1, 3).contiguous()
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    dy = (torch.rand(x.shape, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    one, zero = torch.ones(3, dtype=acc), torch.zeros(3, dtype=acc)
    ops = bn_swish_ops._OPS["cpu"][activation]
    f, f_backward = ((torch.nn.functional.silu, torch.ops.aten.silu_backward) if activation == "swish"
                     else (torch.nn.functional.mish, torch.ops.aten.mish_backward))
    tolerance = _tolerance(dtype)
    torch.testing.assert_close(ops.forward(x, one, zero), f(x.double()).to(dtype), **tolerance, equal_nan=True)
    torch.testing.assert_close(ops.backward_input(dy, x, one, zero, one, zero, zero),
                               f_backward(dy.double(), x.double()).to(dtype), **tolerance, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_matches_reference_backend_in_its_dtype(dtype, gen):
    x, dy, pc = _inputs((2, 4, 9, 11), False, dtype, gen)
    for g, w in zip(_run_all(CPU, x, dy, pc), _run_all(REFERENCE, x, dy, pc)):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("shape, channels_last", [((2, 3, 200, 200), False), ((8, 16, 40, 40), True),
                                                  ((4, 37, 30, 30), True), ((64, 8, 9, 9), False)],
                         ids=str)
# float64 too: the kernels sum in double, and a thread-dependent order of those sums mostly vanishes in
# the rounding to a float32 result.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_more_threads_give_identical_bits(shape, channels_last, dtype, gen, restore_threads):
    x, dy, pc = _inputs(shape, channels_last, dtype, gen)
    torch.set_num_threads(1)
    single = _run_all(CPU, x, dy, pc)
    for threads in (2, 3, 4):
        torch.set_num_threads(threads)
        for a, b in zip(single, _run_all(CPU, x, dy, pc)):
            assert torch.equal(a, b), f"{threads} threads"


@pytest.mark.parametrize("x_dtype, math_dtype", [(torch.float32, torch.float64), (torch.bfloat16, torch.float64),
                                                (torch.float64, torch.float32)], ids=str)
def test_math_in_the_per_channel_dtype(x_dtype, math_dtype, gen):
    """Per-channel tensors in another precision than x's math: the ops compute as if x and grad_output
    were converted to the per-channel dtype first."""
    x, dy, pc = _inputs((3, 37, 5, 3), True, x_dtype, gen)
    pc = [t.to(math_dtype) for t in pc]
    got = _run_all(CPU, x, dy, pc)
    want = _run_all(CPU, x.to(math_dtype), dy.to(math_dtype), pc)
    for index, (g, w) in enumerate(zip(got, want)):
        full_size = index in (2, 5)
        assert g.dtype == (x_dtype if full_size else math_dtype)
        assert torch.equal(g, w.to(x_dtype) if full_size else w), f"output {index}"


def test_non_dense_input_and_grad_in_another_layout(gen):
    x, dy, pc = _inputs((2, 3, 8, 10), False, torch.float64, gen)
    sliced = x[:, :, :, ::2]  # not dense: copied to contiguous
    grad = dy[:, :, :, ::2].to(memory_format=torch.channels_last)  # brought to x's layout
    got = _run_all(CPU, sliced, grad, pc)
    want = _run_all(REFERENCE, sliced.contiguous(), grad.contiguous(), pc)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_empty_input(gen):
    x, dy, pc = _inputs((0, 3, 4, 4), False, torch.float32, gen)
    total, total_sq, y, sum_dz, sum_dz_xmu, dx = _run_all(CPU, x, dy, pc)
    for t in (total, total_sq, sum_dz, sum_dz_xmu):
        assert torch.equal(t, torch.zeros(3))
    assert y.shape == dx.shape == x.shape


@pytest.mark.parametrize("dtype, name", [(torch.int32, "Int"), (torch.bool, "Bool"),
                                         (torch.complex64, "ComplexFloat")])
def test_unsupported_dtype_is_named(dtype, name):
    x = torch.ones(2, 3, 4, dtype=dtype)
    c = torch.ones(3)
    pattern = f"unsupported dtype {name} \\(expected float16, bfloat16, float32 or float64\\)"
    with pytest.raises(RuntimeError, match=pattern):
        CPU.stats(x, c, c)
    with pytest.raises(RuntimeError, match=pattern):
        CPU.forward(x, c, c)
    with pytest.raises(RuntimeError, match=pattern):
        CPU.backward_reduce(x, x, c, c, c)
    with pytest.raises(RuntimeError, match=pattern):
        CPU.backward_input(x, x, c, c, c, c, c)


def test_rejects_bad_per_channel_arguments():
    x = torch.ones(2, 3, 4)
    with pytest.raises(RuntimeError, match="per-channel tensors need 3 elements"):
        CPU.forward(x, torch.ones(4), torch.ones(4))
    with pytest.raises(RuntimeError, match="per-channel tensors must be float32 or float64"):
        CPU.stats(x, torch.ones(3, dtype=torch.float16), torch.ones(3, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="grad_output has shape"):
        CPU.backward_input(torch.ones(2, 3, 5), x, *[torch.ones(3)] * 5)


# The kernels are compiled once per instruction set (csrc/cpu/bn_vec_kernels.cpp) and follow ATen's
# choice, which ATEN_CPU_CAPABILITY lowers: each lower copy, with its own vector widths and tails, is
# tested on this CPU.
@pytest.mark.slow
@pytest.mark.skipif("SWISHKERNELS_LOWERED_CAPABILITY" in os.environ, reason="already lowered")
@pytest.mark.parametrize("capability", LOWER_CAPABILITIES)
def test_numerics_with_lower_cpu_capability(capability):
    run_with_lower_capability(capability, __file__, "reference or threads or per_channel_dtype or float_range")
