"""Autograd: what is saved for backward, gradcheck, double backward, the autograd.Function forms."""
import pytest
import torch
import torch.nn.functional as F

import swishkernels as sk
from helpers import randn
from swishkernels import reference

FUNCTIONALS = {"swish": (sk.swish, F.silu, sk.SwishFunction), "mish": (sk.mish, F.mish, sk.MishFunction)}


@pytest.fixture(params=list(FUNCTIONALS))
def activation(request):
    return request.param


def _saved_tensors(fn, x):
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    return y, saved


def test_forward_saves_only_the_input(activation, backend, gen):
    x = randn(4, 8, gen=gen).requires_grad_(True)
    functional = FUNCTIONALS[activation][0]
    _, saved = _saved_tensors(lambda t: functional(t, backend=backend), x)
    assert len(saved) == 1
    assert saved[0].data_ptr() == x.data_ptr() and saved[0].shape == x.shape


def test_autograd_function_saves_only_the_input(activation, backend, gen):
    x = randn(4, 8, gen=gen).requires_grad_(True)
    function = FUNCTIONALS[activation][2]
    y, saved = _saved_tensors(lambda t: function.apply(t, backend), x)
    assert len(saved) == 1 and saved[0].data_ptr() == x.data_ptr()
    (dx,) = torch.autograd.grad(y.sum(), x)
    x64 = x.detach().double().requires_grad_(True)
    (want,) = torch.autograd.grad(FUNCTIONALS[activation][1](x64).sum(), x64)
    torch.testing.assert_close(dx, want.float())


def test_naive_swish_saves_more_than_ours(gen):
    """The contrast the project exists for: x * sigmoid(x) keeps two full tensors, we keep one."""
    x = randn(4, 8, gen=gen).requires_grad_(True)
    _, saved = _saved_tensors(reference.swish_naive, x)
    assert len({t.data_ptr() for t in saved}) == 2  # x and sigmoid(x), the latter packed twice


def test_gradcheck_and_gradgradcheck(activation, backend, gen):
    functional = FUNCTIONALS[activation][0]
    x = randn(3, 5, dtype=torch.float64, gen=gen).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: functional(t, backend=backend), (x,))
    assert torch.autograd.gradgradcheck(lambda t: functional(t, backend=backend), (x,))


def test_double_backward_matches_pytorch(activation, backend, gen):
    functional, torch_fn, function = FUNCTIONALS[activation]
    x = randn(50, dtype=torch.float64, gen=gen).requires_grad_(True)
    v = randn(50, dtype=torch.float64, gen=gen)

    def second_derivative(fn):
        (g,) = torch.autograd.grad(fn(x), x, v, create_graph=True)
        return torch.autograd.grad(g.sum(), x)[0]

    want = second_derivative(torch_fn)
    torch.testing.assert_close(second_derivative(lambda t: functional(t, backend=backend)), want)
    torch.testing.assert_close(second_derivative(lambda t: function.apply(t, backend)), want)


def test_gradcheck_through_autograd_function(activation, backend, gen):
    function = FUNCTIONALS[activation][2]
    x = randn(3, 5, dtype=torch.float64, gen=gen).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: function.apply(t, backend), (x,))
