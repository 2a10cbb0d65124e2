"""CUDA-only checks (`pytest -m gpu` on a GPU machine; skipped elsewhere) for every CUDA backend."""
import pytest
import torch
import torch.nn.functional as F

import swishkernels as sk

pytestmark = pytest.mark.gpu

CUDA_BACKENDS = sk.available_backends("cuda") if torch.cuda.is_available() else ["triton", "cuda"]
FUNCTIONS = {"swish": (sk.swish, F.silu, torch.ops.aten.silu_backward),
             "mish": (sk.mish, F.mish, torch.ops.aten.mish_backward)}


@pytest.fixture(params=CUDA_BACKENDS)
def cuda_backend(request):
    return request.param


def _check(activation, backend, x, grad_output):
    ours, torch_fn, _ = FUNCTIONS[activation]
    x = x.detach().requires_grad_(True)
    y = ours(x, backend=backend)
    (dx,) = torch.autograd.grad(y, x, grad_output)
    x64 = x.detach().double().requires_grad_(True)
    y64 = torch_fn(x64)
    (dx64,) = torch.autograd.grad(y64, x64, grad_output.double())
    torch.testing.assert_close(y, y64.to(x.dtype))
    torch.testing.assert_close(dx, dx64.to(x.dtype))
    return y, dx


@pytest.mark.parametrize("activation", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("numel", [1, 7, 4097, 1_000_003])
def test_matches_float64(activation, cuda_backend, dtype, numel):
    x = (torch.randn(numel, device="cuda", dtype=torch.float64) * 3).to(dtype)
    _check(activation, cuda_backend, x, torch.randn_like(x))


@pytest.mark.parametrize("activation", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_misaligned_and_channels_last(activation, cuda_backend, dtype):
    buf = (torch.randn(1 + 8 * 33 * 17 * 5, device="cuda") * 3).to(dtype)
    misaligned = buf[1:]  # storage offset of one element: no 16-byte alignment
    _check(activation, cuda_backend, misaligned, torch.randn_like(misaligned))
    x = (torch.randn(8, 33, 17, 5, device="cuda") * 3).to(dtype).to(memory_format=torch.channels_last)
    y, dx = _check(activation, cuda_backend, x, torch.randn_like(x))
    assert y.is_contiguous(memory_format=torch.channels_last) and dx.stride() == x.stride()


@pytest.mark.parametrize("activation", list(FUNCTIONS))
def test_extreme_values_match_aten(activation, cuda_backend):
    ours, torch_fn, aten_backward = FUNCTIONS[activation]
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        info = torch.finfo(dtype)
        x = torch.tensor([info.max, -info.max, info.tiny, 88.0, -88.0, 1e4, -1e4, float("inf"), float("-inf"),
                          float("nan")], device="cuda").to(dtype)
        torch.testing.assert_close(ours(x, backend=cuda_backend), torch_fn(x), equal_nan=True)
        g = torch.ones_like(x)
        x.requires_grad_(True)
        (dx,) = torch.autograd.grad(ours(x, backend=cuda_backend), x, g)
        torch.testing.assert_close(dx, aten_backward(g, x.detach()), equal_nan=True)


@pytest.mark.parametrize("activation", list(FUNCTIONS))
def test_more_than_2_31_elements(activation, cuda_backend):
    numel = 2**31 + 4099
    needed = 5 * numel * 2  # bf16: x, y, dx, grad and a reference chunk
    if torch.cuda.mem_get_info()[0] < needed:
        pytest.skip(f"needs {needed / 2**30:.0f} GiB of free GPU memory")
    ours, torch_fn, aten_backward = FUNCTIONS[activation]
    x = torch.randn(numel, device="cuda", dtype=torch.bfloat16)
    y = ours(x, backend=cuda_backend)
    from swishkernels import ops
    dx = ops.get(cuda_backend, activation).backward(torch.ones_like(x), x)
    chunk = 2**28
    for start in range(0, numel, chunk):  # compare in pieces; the last piece lies past 2^31
        part = slice(start, start + chunk)
        torch.testing.assert_close(y[part], torch_fn(x[part]))
        torch.testing.assert_close(dx[part], aten_backward(torch.ones_like(x[part]), x[part]))


def test_compile_fullgraph_on_gpu(cuda_backend):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), sk.Swish(backend=cuda_backend),
                                torch.nn.Conv2d(8, 8, 3, padding=1), sk.Mish(backend=cuda_backend)).cuda()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x))
