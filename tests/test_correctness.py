"""Forward and backward values of every CPU-capable backend against float64 references."""
import pytest
import torch
import torch.nn.functional as F

import swishkernels as sk
from helpers import ALL_DTYPES, randn
from swishkernels import ops

ACTIVATIONS = {
    # name: (functional, float64 reference forward, float64 reference derivative)
    "swish": (sk.swish, F.silu, lambda x: torch.sigmoid(x) * (1 + x * (1 - torch.sigmoid(x)))),
    "mish": (sk.mish, F.mish,
             lambda x: torch.tanh(F.softplus(x)) + x * torch.sigmoid(x) * (1 - torch.tanh(F.softplus(x)) ** 2)),
}
ATEN_BACKWARD = {"swish": torch.ops.aten.silu_backward, "mish": torch.ops.aten.mish_backward}

# Odd sizes around block and vector widths, plus empty and 0-dim.
SHAPES = [(), (0,), (1,), (7,), (33,), (1023,), (4097,), (3, 0, 5), (2, 3, 5, 7), (5000, 3)]


@pytest.fixture(params=list(ACTIVATIONS))
def activation(request):
    return request.param


def _expected(activation, x, grad_output):
    _, ref_forward, ref_derivative = ACTIVATIONS[activation]
    x64 = x.double()
    return ref_forward(x64).to(x.dtype), (grad_output.double() * ref_derivative(x64)).to(x.dtype)


def _run(activation, backend, x, grad_output):
    functional = ACTIVATIONS[activation][0]
    x = x.detach().requires_grad_(True)
    y = functional(x, backend=backend)
    (dx,) = torch.autograd.grad(y, x, grad_output) if x.numel() else (torch.zeros_like(x),)
    return y, dx


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_backward_match_float64_reference(activation, backend, dtype, shape, gen):
    x = randn(*shape, dtype=dtype, gen=gen)
    grad_output = randn(*shape, dtype=dtype, gen=gen, scale=1.0)
    y, dx = _run(activation, backend, x, grad_output)
    want_y, want_dx = _expected(activation, x, grad_output)
    assert y.dtype == dtype and y.shape == x.shape
    torch.testing.assert_close(y, want_y)
    if x.numel():
        torch.testing.assert_close(dx, want_dx)


def _layouts(gen):
    base = randn(4, 6, 10, 12, gen=gen)
    return {
        "channels_last": base.to(memory_format=torch.channels_last),
        "transposed": base.transpose(1, 3),
        "sliced": base[:, ::2, 1:9, :],
        "expanded": randn(1, 6, 1, 12, gen=gen).expand(4, 6, 10, 12),
        "storage_offset": base.flatten()[5:5 + 1000],
        "channels_last_3d": randn(2, 3, 4, 5, 6, gen=gen).to(memory_format=torch.channels_last_3d),
    }


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced", "expanded", "storage_offset",
                                    "channels_last_3d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_non_contiguous_layouts(activation, backend, layout, dtype, gen):
    x = _layouts(gen)[layout].to(dtype)
    grad_output = randn(*x.shape, dtype=dtype, gen=gen, scale=1.0)
    y, dx = _run(activation, backend, x, grad_output)
    want_y, want_dx = _expected(activation, x, grad_output)
    torch.testing.assert_close(y, want_y)
    torch.testing.assert_close(dx, want_dx)
    if sk._layout.is_dense(x):  # dense layouts are kept, not copied into contiguous order
        assert y.stride() == x.stride() and dx.stride() == x.stride()
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_grad_output_in_another_layout(activation, backend, gen):
    x = randn(2, 8, 5, 7, gen=gen).to(memory_format=torch.channels_last)
    grad_output = randn(2, 8, 5, 7, gen=gen)  # contiguous, unlike x
    _, dx = _run(activation, backend, x, grad_output)
    torch.testing.assert_close(dx, _expected(activation, x, grad_output)[1])


def _extreme_values(dtype):
    info = torch.finfo(dtype)
    values = [info.max, -info.max, info.tiny, -info.tiny, info.tiny / 4, info.eps, 1e4, -1e4,
              88.0, -88.0, 100.0, -100.0, 20.0, -20.0, 0.5, -0.5,
              float("inf"), float("-inf"), float("nan")]
    return torch.tensor([v for v in values if abs(v) <= info.max or v != v or abs(v) == float("inf")],
                        dtype=dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_extreme_values_match_aten(activation, backend, dtype):
    """Same results as ATen's own F.silu / F.mish (incl. inf and NaN), and no inf/NaN from overflow."""
    x = _extreme_values(dtype)
    grad_output = torch.ones_like(x)
    functional, aten_forward, _ = ACTIVATIONS[activation]
    y, dx = _run(activation, backend, x, grad_output)
    torch.testing.assert_close(y, aten_forward(x), equal_nan=True)
    torch.testing.assert_close(dx, ATEN_BACKWARD[activation](grad_output, x), equal_nan=True)
    finite = torch.isfinite(x)
    assert torch.isfinite(y[finite]).all() and torch.isfinite(dx[finite]).all()


def test_input_never_modified(activation, backend, gen):
    x = randn(3, 4, 5, gen=gen).requires_grad_(True)
    before = x.detach().clone()
    y = ACTIVATIONS[activation][0](x, backend=backend)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.detach(), before)


def test_deterministic(activation, backend, gen):
    x = randn(10_000, gen=gen)
    functional = ACTIVATIONS[activation][0]
    assert torch.equal(functional(x, backend=backend), functional(x, backend=backend))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_every_element_written(activation, backend, dtype, gen):
    """Outputs poisoned with NaN first: any element the kernel skips (a block tail) stays NaN."""
    x = randn(4097, dtype=dtype, gen=gen)
    op_set = ops.get(backend, activation)
    poisoned = x.clone()
    op_set.forward_inplace(poisoned)
    assert not poisoned.isnan().any()
    torch.testing.assert_close(poisoned, _expected(activation, x, x)[0])
    if backend == "triton":
        from swishkernels.triton import launch
        out = torch.full_like(x, float("nan"))
        launch.forward(activation, x, out)
        grad_input = torch.full_like(x, float("nan"))
        launch.backward(activation, torch.ones_like(x), x, grad_input)
        assert not out.isnan().any() and not grad_input.isnan().any()


def test_triton_int64_offsets(activation, monkeypatch, gen):
    """The >= 2^31-element path (int64 offsets) cannot run on a CPU; force it on a small tensor."""
    if "triton" not in sk.available_backends("cpu"):
        pytest.skip("triton backend unavailable")
    from swishkernels.triton import launch
    monkeypatch.setattr(launch, "INT64_THRESHOLD", 0)
    x = randn(3000, gen=gen)
    y, dx = _run(activation, "triton", x, torch.ones_like(x))
    want_y, want_dx = _expected(activation, x, torch.ones_like(x))
    torch.testing.assert_close(y, want_y)
    torch.testing.assert_close(dx, want_dx)
