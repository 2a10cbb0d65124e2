"""The compiled BatchNorm+Swish ops (csrc/bn_swish_ops.cpp, torch.ops.swishkernels.bn_swish_*) called
directly: against the reference backend's math in float64 for every dtype and layout, bitwise equal
results on any number of threads, argument errors. Module-level behaviour (vs nn.BatchNorm2d + F.silu,
gradcheck, opcheck) is covered for the `cpu` backend by tests/test_batchnorm.py."""
import importlib.util

import pytest
import torch

if importlib.util.find_spec("swishkernels._C") is None:
    pytest.skip("swishkernels._C is not built (`pip install --no-build-isolation -e .` builds it)",
                allow_module_level=True)
from swishkernels import bn_ops  # noqa: E402

# Every test here runs with uninitialised memory poisoned (see conftest.poisoned_allocations).
pytestmark = pytest.mark.usefixtures("poisoned_allocations")

CPU = bn_ops._OPS["cpu"]
REFERENCE = bn_ops._OPS["reference"]
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# (shape, channels_last): short rows (channels_last: inner = 1), rows reduced one by one (inner = 49),
# rows split in chunks (inner = 9000 > the kernels' 8192), one channel, odd sizes.
SHAPES = [((3, 5, 7, 7), False), ((3, 5, 7, 7), True), ((2, 3, 90, 100), False),
          ((2, 3, 90, 100), True), ((4, 1, 3, 5), False), ((1, 7, 1, 1), False), ((2, 3, 40), False),
          ((5, 300, 2, 2), False)]


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
    return (*ops.stats(x, pc[0]), ops.forward(x, pc[0], pc[1]),
            *ops.backward_reduce(dy, x, pc[0], pc[1], pc[2]),
            ops.backward_input(dy, x, *pc[:5]))


def _tolerance(dtype):
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-10}
    if dtype == torch.float32:
        return {"rtol": 1.3e-6, "atol": 1e-5}  # torch.testing's float32 defaults
    # fp16/bf16 outputs: the fp32 math rounded once to the storage dtype.
    return {"rtol": 1e-3 if dtype == torch.float16 else 8e-3, "atol": 1e-5}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, channels_last", SHAPES, ids=[f"{s}-{'cl' if c else 'nchw'}" for s, c in SHAPES])
def test_matches_reference_in_float64(dtype, shape, channels_last, gen):
    """Every op against the reference backend run in float64 on the same (rounded) values."""
    x, dy, pc = _inputs(shape, channels_last, dtype, gen)
    got = _run_all(CPU, x, dy, pc)
    want = _run_all(REFERENCE, x.double(), dy.double(), [t.double() for t in pc])
    for index, (g, w) in enumerate(zip(got, want)):
        full_size = index in (2, 5)
        assert g.dtype == (dtype if full_size else pc[0].dtype)
        if full_size:
            assert g.shape == x.shape and g.stride() == x.stride()
            torch.testing.assert_close(g.double(), w.to(dtype).double(), **_tolerance(dtype),
                                       msg=lambda m: f"output {index}: {m}")
        else:  # per-channel sums over fp32 (fp64 for fp64 x) terms, each rounded once in its math
            sum_tolerance = _tolerance(torch.float64) if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
            torch.testing.assert_close(g.double(), w, **sum_tolerance,
                                       msg=lambda m: f"output {index}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_matches_reference_backend_in_its_dtype(dtype, gen):
    x, dy, pc = _inputs((2, 4, 9, 11), False, dtype, gen)
    for g, w in zip(_run_all(CPU, x, dy, pc), _run_all(REFERENCE, x, dy, pc)):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("shape, channels_last", [((2, 3, 200, 200), False), ((8, 16, 40, 40), True),
                                                  ((64, 8, 9, 9), False)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_more_threads_give_identical_bits(shape, channels_last, dtype, gen, restore_threads):
    x, dy, pc = _inputs(shape, channels_last, dtype, gen)
    torch.set_num_threads(1)
    single = _run_all(CPU, x, dy, pc)
    for threads in (2, 3, 4):
        torch.set_num_threads(threads)
        for a, b in zip(single, _run_all(CPU, x, dy, pc)):
            assert torch.equal(a, b), f"{threads} threads"


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
        CPU.stats(x, c)
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
        CPU.stats(x, torch.ones(3, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="grad_output has shape"):
        CPU.backward_input(torch.ones(2, 3, 5), x, *[torch.ones(3)] * 5)
