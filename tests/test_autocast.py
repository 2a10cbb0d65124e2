"""Autocast: our modules and the fused BatchNorm return the dtype (and values) PyTorch's own layers
return under torch.autocast, and backward runs. CPU bfloat16 here; CUDA float16/bfloat16 in `gpu` tests."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import swishkernels as sk
from helpers import randn

ACTIVATIONS = {"swish": (sk.Swish, nn.SiLU), "mish": (sk.Mish, nn.Mish)}


def _check_activation(device, backend, activation, autocast_dtype, input_dtype, gen):
    ours_class, theirs_class = ACTIVATIONS[activation]
    ours, theirs = ours_class(backend=backend), theirs_class()
    conv = nn.Conv2d(3, 4, 1).to(device)
    x = randn(2, 3, 5, 7, gen=gen, device=device).to(input_dtype)
    with torch.autocast(device, dtype=autocast_dtype):
        for source in (x, conv(x.float())):  # straight from the input, and after an autocast conv
            source = source.detach().requires_grad_()
            got, expected = ours(source), theirs(source)
            assert got.dtype == expected.dtype
            torch.testing.assert_close(got, expected)
            (grad_got,) = torch.autograd.grad(got.float().sum(), source)
            (grad_expected,) = torch.autograd.grad(expected.float().sum(), source)
            assert grad_got.dtype == grad_expected.dtype
            torch.testing.assert_close(grad_got, grad_expected)


def _check_batchnorm(device, backend, training, autocast_dtype, gen):
    conv = nn.Conv2d(3, 4, 3).to(device)
    bn = nn.BatchNorm2d(4).to(device).train(training)
    fused = sk.BatchNormSwish2d(4, backend=backend).to(device).train(training)
    fused.load_state_dict(bn.state_dict())
    x = randn(2, 3, 8, 9, gen=gen, device=device)
    with torch.autocast(device, dtype=autocast_dtype):
        for source in (conv(x), x[:, :1].expand(2, 4, 8, 9).contiguous()):  # autocast dtype, then fp32
            source = source.detach().requires_grad_()
            got, expected = fused(source), F.silu(bn(source))
            assert got.dtype == expected.dtype
            torch.testing.assert_close(got, expected)
            weights = randn(*got.shape, gen=gen, device=device)
            (grad_got,) = torch.autograd.grad((got.float() * weights).sum(), source)
            (grad_expected,) = torch.autograd.grad((expected.float() * weights).sum(), source)
            assert grad_got.dtype == grad_expected.dtype
            # In training the input gradient is a small difference of large per-channel sums, computed
            # in 16 bits by ATen and in fp32 by us: elementwise tolerances do not fit it. Measure both
            # against float64 math instead: ours must be within twice PyTorch's own error, or twice what
            # rounding the gradient to 16 bits alone costs (half an ulp, 2^-8 of the largest for bf16).
            exact = _float64_input_grad(bn, source, weights)
            ours_err = (grad_got.double() - exact).abs().max()
            theirs_err = (grad_expected.double() - exact).abs().max()
            half_ulp = exact.abs().max() * torch.finfo(grad_got.dtype).eps / 2
            assert ours_err <= 2 * max(theirs_err, half_ulp), (ours_err, theirs_err, half_ulp)
    torch.testing.assert_close(fused.running_mean, bn.running_mean)
    torch.testing.assert_close(fused.running_var, bn.running_var)


def _float64_input_grad(bn, source, weights):
    x = source.detach().double().requires_grad_()
    mean = var = None
    if not bn.training:
        mean, var = bn.running_mean.double(), bn.running_var.double()
    y = F.silu(F.batch_norm(x, mean, var, bn.weight.double(), bn.bias.double(), bn.training, 0.0, bn.eps))
    (grad,) = torch.autograd.grad((y * weights.double()).sum(), x)
    return grad


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_cpu_autocast_activation(backend, activation, input_dtype, gen):
    _check_activation("cpu", backend, activation, torch.bfloat16, input_dtype, gen)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_cpu_autocast_batchnorm_swish(backend, training, gen):
    _check_batchnorm("cpu", backend, training, torch.bfloat16, gen)


@pytest.mark.gpu
@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("activation", ["swish", "mish"])
@pytest.mark.parametrize("cuda_backend", ["triton", "cuda", "reference"])
def test_cuda_autocast_activation(cuda_backend, activation, autocast_dtype, gen):
    if cuda_backend not in sk.available_backends("cuda"):
        pytest.skip(f"{cuda_backend} cannot run CUDA tensors here")
    for input_dtype in (torch.float32, autocast_dtype):
        _check_activation("cuda", cuda_backend, activation, autocast_dtype, input_dtype, gen)


@pytest.mark.gpu
@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_cuda_autocast_batchnorm_swish(training, autocast_dtype, gen):
    _check_batchnorm("cuda", None, training, autocast_dtype, gen)
