"""torch.library integration: opcheck on every op, torch.compile(fullgraph=True) matches eager."""
import pytest
import torch
import torch.nn as nn

import swishkernels as sk
from helpers import randn
from swishkernels import ops


@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck(backend, activation, dtype, gen):
    op_set = ops.get(backend, activation)
    x = randn(3, 4, 5, dtype=dtype, gen=gen)
    channels_last = randn(2, 3, 4, 5, dtype=dtype, gen=gen).to(memory_format=torch.channels_last)
    for sample in (x, x.requires_grad_(True), channels_last, x.detach()[:, ::2]):
        torch.library.opcheck(op_set.forward, (sample,))
    torch.library.opcheck(op_set.backward, (randn(3, 4, 5, dtype=dtype, gen=gen), x.detach()))
    torch.library.opcheck(op_set.backward, (randn(3, 4, 5, dtype=dtype, gen=gen).requires_grad_(True),
                                            x.detach().requires_grad_(True)))
    torch.library.opcheck(op_set.forward_inplace, (x.detach().clone(),))


def _model(backend):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), sk.Swish(backend=backend),
        nn.Conv2d(8, 8, 3, padding=1), sk.Mish(backend=backend), nn.Conv2d(8, 4, 1),
    )


def _forward_backward(model, x):
    x = x.clone().requires_grad_(True)
    y = model(x)
    y.square().sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in model.parameters()]


def _assert_compiled_matches_eager(backend, compiler, gen):
    eager, compiled = _model(backend), _model(backend)
    x = randn(2, 3, 10, 12, gen=gen)
    want = _forward_backward(eager, x)
    got = _forward_backward(torch.compile(compiled, fullgraph=True, backend=compiler), x)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    for g, w in zip(got[2], want[2]):
        # Inductor reorders the float32 reductions of conv/BN gradients: agreement to fp32 rounding noise
        # accumulated over 240 terms, hence a tolerance looser than the elementwise default.
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_compile_fullgraph_matches_eager(backend, gen):
    torch._dynamo.reset()
    _assert_compiled_matches_eager(backend, "aot_eager", gen)


def test_compile_inductor_matches_eager(gen):
    """Inductor (real code generation) once, with the default CPU backend: slow to compile on 2 cores."""
    torch._dynamo.reset()
    _assert_compiled_matches_eager(sk.available_backends("cpu")[0], "inductor", gen)
