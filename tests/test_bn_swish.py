"""Fused BatchNorm2d + Swish / Mish against nn.BatchNorm2d + F.silu / F.mish, fuse_bn_swish, and the memory
targets."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import swishkernels as sk
from helpers import randn, saved_activation_bytes
from swishkernels import bn_swish, bn_swish_ops

BN_BACKENDS = [b for b in sk.available_backends("cpu") if b in bn_swish_ops._OPS]
OPTIONS = {
    "default": {},
    "momentum_none": {"momentum": None},
    "no_affine": {"affine": False},
    "no_running_stats": {"track_running_stats": False},
    "eps": {"eps": 1e-3, "momentum": 0.3},
}


# activation -> (fused module, PyTorch's activation)
MODULES = {"swish": (sk.BatchNormSwish2d, F.silu), "mish": (sk.BatchNormMish2d, F.mish)}


@pytest.fixture(params=BN_BACKENDS)
def bn_backend(request):
    return request.param


def _pair(options, dtype, backend, channels=6, activation="swish"):
    """The fused module in `dtype` and an nn.BatchNorm2d holding the same values in float64: the
    reference is computed in float64 and rounded once, as the fused kernel's result should be."""
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(channels, **options).to(dtype)
    if reference.affine:
        with torch.no_grad():  # non-trivial affine parameters, so their gradients mean something
            reference.weight.uniform_(0.5, 1.5)
            reference.bias.uniform_(-1, 1)
    if reference.track_running_stats:
        with torch.no_grad():
            reference.running_mean.uniform_(-1, 1)
            reference.running_var.uniform_(0.5, 2)
    fused = MODULES[activation][0](channels, **options, backend=backend).to(dtype)
    fused.load_state_dict(reference.state_dict())
    return reference.double(), fused


def _tolerance(dtype):
    # fp64: the 1e-10. Others: torch.testing defaults for the dtype.
    return {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}


# Swish: every constructor option in fp64 and fp32; bf16 (same code path, coarser rounding) with the defaults.
# Mish shares every kernel but the activation's f and f': the options that change the statistics' paths.
CASES = [("swish", dtype, option) for dtype in (torch.float64, torch.float32) for option in OPTIONS]
CASES.append(("swish", torch.bfloat16, "default"))
CASES += [("mish", torch.float64, "default"), ("mish", torch.float64, "momentum_none"),
          ("mish", torch.float32, "default"), ("mish", torch.bfloat16, "default")]


@pytest.mark.parametrize("activation, dtype, option", CASES, ids=[f"{a}-{d}-{o}" for a, d, o in CASES])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_matches_batchnorm_then_activation(bn_backend, activation, dtype, option, channels_last, training, gen):
    reference, fused = _pair(OPTIONS[option], dtype, bn_backend, activation=activation)
    act = MODULES[activation][1]
    reference.train(training)
    fused.train(training)
    for step in range(2):  # two steps: running statistics accumulate (momentum=None averages them)
        x = (randn(3, 6, 5, 7, gen=gen, scale=2.0) + 0.5).to(dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        grad_output = randn(3, 6, 5, 7, gen=gen, scale=1.0).to(dtype)
        # Each step starts the reference from the fused module's (dtype-rounded) running statistics, so
        # every update is compared from the same starting point.
        reference.load_state_dict(fused.state_dict())
        x_ref, x_fused = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        y_ref = act(reference(x_ref.double()))
        y_fused = fused(x_fused)
        y_ref.backward(grad_output.double())
        y_fused.backward(grad_output)
        tol = _tolerance(dtype)
        torch.testing.assert_close(y_fused, y_ref.to(dtype), **tol)
        torch.testing.assert_close(x_fused.grad, x_ref.grad, **tol)
        if reference.affine:
            # Parameter gradients are sums over N*H*W = 105 terms of magnitude up to ~10 (x - mean with
            # running_var down to 0.5): fp32 summation error is up to ~105 * 6e-8 * 10 = 6e-5 absolute,
            # above the default atol of 1e-5 for results near 1. Other dtypes: defaults.
            param_tol = {"rtol": 1.3e-6, "atol": 1e-4} if dtype == torch.float32 else tol
            torch.testing.assert_close(fused.weight.grad, reference.weight.grad.to(dtype), **param_tol)
            torch.testing.assert_close(fused.bias.grad, reference.bias.grad.to(dtype), **param_tol)
            fused.weight.grad = reference.weight.grad = None
            fused.bias.grad = reference.bias.grad = None
        for name, buffer in reference.named_buffers():
            torch.testing.assert_close(getattr(fused, name), buffer.to(getattr(fused, name).dtype), **tol)
    if channels_last:
        assert y_fused.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("activation", list(MODULES))
def test_state_dict_keys_match_batchnorm(activation):
    module = MODULES[activation][0]
    assert module(4).state_dict().keys() == nn.BatchNorm2d(4).state_dict().keys()
    module(4).load_state_dict(nn.BatchNorm2d(4).state_dict())  # strict load works


@pytest.mark.parametrize("activation", list(MODULES))
def test_gradcheck(bn_backend, activation, gen):
    ops = bn_swish_ops.resolve(bn_backend, torch.device("cpu"), activation)
    for training in (True, False):
        module = MODULES[activation][0](3, backend=bn_backend).double().train(training)
        with torch.no_grad():
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-1, 1)
        x = randn(2, 3, 2, 3, dtype=torch.float64, gen=gen).requires_grad_(True)
        weight, bias = module.weight, module.bias

        def fn(x, w, b):
            return bn_swish.BatchNormActFunction.apply(x, w, b, None, None, True, 0.1, 1e-5, ops)[0]

        if not training:  # eval: fixed statistics
            def fn(x, w, b):  # noqa: F811
                mean, var = torch.full((3,), 0.2, dtype=x.dtype), torch.full((3,), 1.5, dtype=x.dtype)
                return bn_swish.BatchNormActFunction.apply(x, w, b, mean, var, False, 0.1, 1e-5, ops)[0]
        # fast_mode checks random projections of the Jacobian: the interpreted Triton kernels make the
        # full Jacobian (one forward per input element) too slow for CI.
        assert torch.autograd.gradcheck(fn, (x, weight, bias), fast_mode=bn_backend == "triton")


@pytest.mark.parametrize("activation", list(MODULES))
def test_forward_saves_input_and_per_channel_stats_only(bn_backend, activation, gen):
    module = MODULES[activation][0](6, backend=bn_backend)
    x = randn(2, 6, 4, 4, gen=gen).requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        module(x)
    full_size = [t for t in saved if t.numel() == x.numel()]
    assert len(full_size) == 1 and full_size[0].data_ptr() == x.data_ptr()
    assert all(t.numel() == 6 for t in saved if t.numel() != x.numel())


def test_bad_inputs():
    with pytest.raises(ValueError, match="4D"):
        sk.BatchNormSwish2d(3)(torch.randn(2, 3))
    with pytest.raises(TypeError, match="int32"):
        sk.BatchNormSwish2d(3)(torch.ones(2, 3, 2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        sk.BatchNormSwish2d(3)(torch.randn(1, 3, 1, 1))


def _stack(activation, blocks=4, channels=16):
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
    for _ in range(blocks):
        layers += [nn.BatchNorm2d(channels), activation(), nn.Conv2d(channels, channels, 3, padding=1, bias=False)]
    return nn.Sequential(*layers)


def test_fuse_bn_swish_keeps_outputs_and_gradients(bn_backend, gen):
    # float64, so that "unchanged" can be checked tightly rather than to fp32 summation-order noise.
    x = randn(2, 3, 12, 12, gen=gen, dtype=torch.float64)
    model = _stack(nn.SiLU).double()
    fused = _stack(nn.SiLU).double()
    keys = set(fused.state_dict())
    assert len(sk.fuse_bn_swish(fused, backend=bn_backend).fused) == 4
    assert set(fused.state_dict()) == keys
    assert sum(isinstance(m, sk.BatchNormSwish2d) for m in fused.modules()) == 4
    assert not any(isinstance(m, nn.SiLU) for m in fused.modules())
    for train in (True, False):
        model.train(train)
        fused.train(train)
        y, y_fused = model(x), fused(x)
        torch.testing.assert_close(y_fused, y)
        y.square().sum().backward()
        y_fused.square().sum().backward()
        for p, q in zip(model.parameters(), fused.parameters()):
            torch.testing.assert_close(q.grad, p.grad)
            p.grad = q.grad = None
    assert not sk.fuse_bn_swish(_stack(nn.ReLU)).fused
    assert len(sk.fuse_bn_swish(_stack(sk.Swish)).fused) == 4


def test_recompute_mode_gives_identical_gradients(bn_backend, gen):
    x = randn(2, 3, 12, 12, gen=gen)
    plain, recomputing = _stack(nn.SiLU), _stack(nn.SiLU)
    sk.fuse_bn_swish(plain, backend=bn_backend)
    sk.fuse_bn_swish(recomputing, recompute=True, backend=bn_backend)
    plain(x).square().sum().backward()
    with sk.recompute_bn_swish():
        y = recomputing(x)
    y.square().sum().backward()
    for p, q in zip(plain.parameters(), recomputing.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_saved_bytes_targets(gen):
    """The issue's targets for a Conv-BN-Swish stack: fused <= LeakyReLU(inplace) and <= torch.compile of
    Conv-BN-SiLU, recompute <= 0.6x LeakyReLU(inplace)."""
    x = randn(2, 3, 32, 32, gen=gen)
    leaky = saved_activation_bytes(_stack(lambda: nn.LeakyReLU(0.1, inplace=True)), x)
    silu = saved_activation_bytes(_stack(nn.SiLU), x)
    fused_model = _stack(nn.SiLU)
    sk.fuse_bn_swish(fused_model)
    fused = saved_activation_bytes(fused_model, x)
    recompute_model = _stack(nn.SiLU)
    sk.fuse_bn_swish(recompute_model, recompute=True)
    recompute = saved_activation_bytes(recompute_model, x, recompute=True)
    # aot_eager_decomp_partition: the min-cut partitioner that lets inductor recompute, without codegen.
    compiled = saved_activation_bytes(torch.compile(_stack(nn.SiLU), backend="aot_eager_decomp_partition"), x)
    assert fused <= leaky < silu
    assert fused <= compiled
    assert recompute <= 0.6 * leaky


@pytest.mark.parametrize("activation", bn_swish_ops.ACTIVATIONS)
def test_opcheck_bn_ops(bn_backend, activation, gen):
    ops = bn_swish_ops.resolve(bn_backend, torch.device("cpu"), activation)
    x = randn(2, 3, 4, 5, gen=gen)
    dy = randn(2, 3, 4, 5, gen=gen)
    per_channel = [randn(3, gen=gen) for _ in range(5)]
    for sample in (x, x.to(memory_format=torch.channels_last)):
        torch.library.opcheck(ops.stats, (sample, per_channel[0], bn_swish_ops.stats_factor(per_channel[1])))
        torch.library.opcheck(ops.forward, (sample, per_channel[0], per_channel[1]))
        torch.library.opcheck(ops.backward_reduce, (dy, sample, *per_channel[:3]))
        torch.library.opcheck(ops.backward_input, (dy, sample, *per_channel))


def _mish_stack(fused, blocks=4, channels=16, backend=None, recompute=False):
    """Conv-BN-Mish blocks (YOLOv4's CSPDarknet pattern), as PyTorch's modules or fused."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
    for _ in range(blocks):
        # Identity in the fused Mish's place: the same module indices, so the same state_dict keys.
        norm = [sk.BatchNormMish2d(channels, backend=backend, recompute=recompute), nn.Identity()] if fused else \
            [nn.BatchNorm2d(channels), nn.Mish()]
        layers += [*norm, nn.Conv2d(channels, channels, 3, padding=1, bias=False)]
    return nn.Sequential(*layers)


def test_mish_stack_saved_bytes_targets(gen):
    """A fused Conv-BN-Mish stack saves no more for backward than Conv-BN-LeakyReLU(inplace), and with
    recompute no more than 0.6x of it; eager Conv-BN-Mish saves more than both."""
    x = randn(2, 3, 32, 32, gen=gen)
    leaky = saved_activation_bytes(_stack(lambda: nn.LeakyReLU(0.1, inplace=True)), x)
    mish = saved_activation_bytes(_mish_stack(False), x)
    fused = saved_activation_bytes(_mish_stack(True), x)
    recompute = saved_activation_bytes(_mish_stack(True, recompute=True), x, recompute=True)
    assert fused <= leaky < mish
    assert recompute <= 0.6 * leaky


def test_mish_stack_matches_and_recompute_gives_identical_gradients(bn_backend, gen):
    """The fused stack (same parameters) against PyTorch's Conv-BN-Mish in float64, and recompute mode
    bit-identical to plain fused."""
    x = randn(2, 3, 8, 8, gen=gen, dtype=torch.float64)
    model = _mish_stack(False, blocks=2, channels=4).double()
    fused = _mish_stack(True, blocks=2, channels=4, backend=bn_backend).double()
    recomputing = _mish_stack(True, blocks=2, channels=4, backend=bn_backend, recompute=True).double()
    fused.load_state_dict(model.state_dict())
    recomputing.load_state_dict(model.state_dict())
    y = model(x)
    y_fused = fused(x)
    with sk.recompute_bn_swish():
        y_recomputed = recomputing(x)
    torch.testing.assert_close(y_fused, y, rtol=1e-10, atol=1e-10)
    for out in (y, y_fused, y_recomputed):
        out.square().sum().backward()
    for p, q, r in zip(model.parameters(), fused.parameters(), recomputing.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-10)
        assert torch.equal(q.grad, r.grad)


def test_mish_special_paths_and_compile(gen):
    """BatchNormMish2d where PyTorch's ops must run (jit.trace, forward-mode AD: nn.BatchNorm2d then F.mish) and
    under torch.compile(fullgraph=True) (its ops' fake implementations: no graph break), against eager PyTorch."""
    from torch.autograd import forward_ad
    x = randn(2, 3, 4, 4, gen=gen, dtype=torch.float64)
    tangent = randn(2, 3, 4, 4, gen=gen, dtype=torch.float64)
    fused, reference = sk.BatchNormMish2d(3).double(), nn.BatchNorm2d(3).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-1, 1)
    fused.load_state_dict(reference.state_dict())
    fused.eval()
    reference.eval()
    want = F.mish(reference(x))
    torch.testing.assert_close(torch.jit.trace(fused, x)(x), want, rtol=1e-10, atol=1e-10)
    with forward_ad.dual_level():
        got = forward_ad.unpack_dual(fused(forward_ad.make_dual(x, tangent))).tangent
        expected = forward_ad.unpack_dual(F.mish(reference(forward_ad.make_dual(x, tangent)))).tangent
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    fused.train()
    reference.train()
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), F.mish(reference(x)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused.running_var, reference.running_var, rtol=1e-10, atol=1e-10)
