"""Fused BatchNorm + activation at the edges of the number range, and its one-line errors (issue 19):
fp16 batch variances past fp16's range, fp32/bf16 inputs whose squares overflow, eps <= 0, a channel-count
mismatch, and a raw Triton op on a CPU tensor without the interpreter."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import swishkernels as sk
from helpers import randn
from swishkernels import bn_swish_ops

BN_BACKENDS = [b for b in sk.available_backends("cpu") if b in bn_swish_ops._OPS]
MODULES = {"swish": (sk.BatchNormSwish2d, F.silu), "mish": (sk.BatchNormMish2d, F.mish)}


@pytest.fixture(params=BN_BACKENDS)
def bn_backend(request):
    return request.param


@pytest.mark.parametrize("activation", list(MODULES))
def test_fp16_variance_past_fp16_range_is_blended_in_fp32(bn_backend, activation, gen):
    """Activations of std 300: the batch variance (9e4) does not fit in fp16 (max 65504). nn.BatchNorm2d.half()
    blends it into running_var in fp32 (0.9 * 1 + 0.1 * 9e4 = 9e3, which fits); it must not become inf, which
    would make the eval output a constant."""
    module, act = MODULES[activation]
    reference = nn.BatchNorm2d(3).half()
    fused = module(3, backend=bn_backend).half()
    x = randn(4, 3, 6, 6, gen=gen, scale=300.0).half()
    reference(x)
    fused(x)
    assert torch.isfinite(fused.running_var).all(), fused.running_var
    torch.testing.assert_close(fused.running_var, reference.running_var)
    torch.testing.assert_close(fused.running_mean, reference.running_mean)
    reference.eval()
    fused.eval()
    y = fused(x)
    assert y.float().std() > 0.1  # not a constant
    # Reference in float64 from the same fp16 buffers, rounded once: fp16 defaults.
    torch.testing.assert_close(y, act(reference.double()(x.double())).half())


# (dtype, magnitude): fp32 values near 1e20 square to 1e40 > fp32's max 3.4e38; bf16 shares fp32's exponent
# range, so 1e30 does the same in its fp32 math.
HUGE = [(torch.float32, 1e20), (torch.bfloat16, 1e30)]


@pytest.mark.parametrize("activation", list(MODULES))
@pytest.mark.parametrize("dtype, magnitude", HUGE, ids=[str(d) for d, _ in HUGE])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_huge_inputs_give_finite_statistics_outputs_and_gradients(bn_backend, activation, dtype, magnitude,
                                                                  channels_last, gen):
    """nn.BatchNorm2d + activation is finite on these inputs (its CPU statistics are in float64); the fused
    layer's shifted sum of squares used to overflow to inf and give all-NaN outputs and gradients."""
    module, act = MODULES[activation]
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(3).to(dtype)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-1, 1)
    fused = module(3, backend=bn_backend).to(dtype)
    fused.load_state_dict(reference.state_dict())
    reference.double()  # the same (dtype-rounded) parameters, in float64
    x = (randn(4, 3, 5, 6, gen=gen) * magnitude + 0.5 * magnitude).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    grad_output = randn(4, 3, 5, 6, gen=gen).to(dtype)
    x_fused = x.clone().requires_grad_(True)
    x_ref = x.double().requires_grad_(True)
    y_fused = fused(x_fused)
    y_ref = act(reference(x_ref))
    y_fused.backward(grad_output)
    y_ref.backward(grad_output.double())
    assert torch.isfinite(y_fused).all() and torch.isfinite(x_fused.grad).all()
    torch.testing.assert_close(y_fused, y_ref.to(dtype))
    # dx is of size 1 / magnitude: compared relative to that size, with the dtype's default tolerances (an
    # absolute atol would pass anything this small).
    tol = {"rtol": 1.3e-6, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1.6e-2, "atol": 1e-5}
    torch.testing.assert_close(x_fused.grad.double() * magnitude, x_ref.grad * magnitude, **tol)
    # Parameter gradients: sums over 120 terms of size ~1 (fp32: up to ~120 * 6e-8 absolute, above atol 1e-5).
    param_tol = {"rtol": 1.3e-6, "atol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(fused.weight.grad, reference.weight.grad.to(dtype), **param_tol)
    torch.testing.assert_close(fused.bias.grad, reference.bias.grad.to(dtype), **param_tol)
    # Running statistics as nn.BatchNorm2d keeps them in this dtype. The mean's summation error is relative to
    # the spread of the data (~magnitude), as it is for normal inputs (~1): compared in units of magnitude.
    # The variance (~magnitude^2) is past the dtype's range in nn.BatchNorm2d's buffers too: inf in both.
    tol = {"rtol": 1.3e-6, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1.6e-2, "atol": 1e-5}
    torch.testing.assert_close(fused.running_mean.double() / magnitude,
                               reference.running_mean.to(dtype).double() / magnitude, **tol)
    torch.testing.assert_close(fused.running_var, reference.running_var.to(dtype))


def test_statistics_scaling_changes_nothing_on_normal_inputs(bn_backend, gen):
    """The power-of-two scale of the statistics is exact: outputs with a channel whose first sample is large
    (scaled) match float64 as tightly as ever."""
    fused = sk.BatchNormSwish2d(3, backend=bn_backend).double()
    reference = nn.BatchNorm2d(3).double()
    x = randn(2, 3, 4, 5, gen=gen, dtype=torch.float64) * 7 + 1000
    torch.testing.assert_close(fused(x), F.silu(reference(x)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused.running_var, reference.running_var, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_non_positive_eps_is_refused_in_training(eps, gen):
    x = randn(2, 3, 4, 4, gen=gen)
    with pytest.raises(ValueError, match="eps must be positive during training, but got"):
        sk.BatchNormSwish2d(3, eps=eps)(x)
    with pytest.raises(ValueError, match="eps must be positive during training"):
        sk.BatchNormMish2d(3, eps=eps)(x)
    # nn.BatchNorm2d accepts it in eval (running statistics): so do we.
    assert torch.isfinite(sk.BatchNormSwish2d(3, eps=eps).eval()(x)).all()


def test_channel_count_mismatch_names_the_parameter(gen):
    x = randn(2, 3, 4, 4, gen=gen)
    with pytest.raises(RuntimeError, match="running_mean should contain 3 elements not 4"):
        sk.BatchNormSwish2d(4)(x)
    with pytest.raises(RuntimeError, match="weight should contain 3 elements not 4"):
        sk.BatchNormMish2d(4, track_running_stats=False)(x)


def test_raw_triton_op_on_cpu_without_interpreter_names_triton_interpret():
    if "triton" not in bn_swish_ops._OPS:
        pytest.skip("no triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import torch, swishkernels\n"
            "x, s = torch.randn(2, 3, 4, 4), torch.ones(3)\n"
            "ops = torch.ops.swishkernels\n"
            "calls = [lambda: ops.triton_bn_swish_forward(x, s, s), lambda: ops.triton_bn_mish_forward(x, s, s),\n"
            "         lambda: ops.triton_swish_forward(x), lambda: ops.triton_mish_backward(x, x)]\n"
            "for call in calls:\n"
            "    try:\n"
            "        call()\n"
            "    except RuntimeError as e:\n"
            "        print('ERROR', e)\n")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    errors = [line for line in p.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 4, p.stdout + p.stderr
    for line in errors:
        assert "TRITON_INTERPRET=1" in line and "active drivers" not in line, line
