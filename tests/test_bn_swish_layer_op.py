"""The fused layer's one-op-per-direction path on the cpu backend (csrc/bn_swish_layer.cpp, bn_swish_autograd.cpp):
the same numbers as the four-pass ops finished in Python (bitwise), PyTorch's BatchNorm2d + SiLU / Mish in every
dtype and layout, gradcheck, opcheck, the saved tensors, and the count of ops a training step dispatches (the
fixed per-layer cost the op exists to remove)."""
import importlib.util

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import swishkernels as sk
from helpers import randn
from swishkernels import bn_swish, bn_swish_ops

if importlib.util.find_spec("swishkernels._C") is None or not bn_swish_ops.LAYER_OPS:
    pytest.skip("swishkernels._C is not built", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("poisoned_allocations")

MODULES = {"swish": (sk.BatchNormSwish2d, F.silu), "mish": (sk.BatchNormMish2d, F.mish)}
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
OPTIONS = {"default": {}, "momentum_none": {"momentum": None}, "no_affine": {"affine": False},
           "no_running_stats": {"track_running_stats": False}}
# (shape, layout): odd sizes, one channel, channels_last, a 3-D and a non-dense (sliced) input.
SHAPES = [((3, 5, 7, 9), "nchw"), ((3, 37, 5, 3), "channels_last"), ((4, 1, 3, 5), "nchw"),
          ((2, 6, 5, 8), "sliced"), ((1, 16, 8, 8), "nchw")]


def _input(shape, layout, dtype, gen):
    if layout == "sliced":  # every other column: not dense, copied once by the op
        return (randn(*shape[:3], 2 * shape[3], gen=gen, scale=2.0) + 0.5).to(dtype)[..., ::2]
    x = (randn(*shape, gen=gen, scale=2.0) + 0.5).to(dtype)
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


def _module(activation, channels, dtype, training, **options):
    torch.manual_seed(0)
    module = MODULES[activation][0](channels, backend="cpu", **options).to(dtype).train(training)
    with torch.no_grad():
        if module.affine:
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-1, 1)
        if module.track_running_stats:
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return module


def _four_pass_step(module, x, dy):
    """One step through BatchNormActFunction with the cpu backend's four passes (the path before the layer
    ops), with the module's bookkeeping."""
    counter = module.num_batches_tracked if module.training and module.track_running_stats else None
    momentum = module.momentum if counter is not None or module.momentum is not None else 0.0
    tracked = not module.training or module.track_running_stats
    use_batch_stats = module.training or module.running_mean is None
    ops = bn_swish_ops._OPS["cpu"][module.activation]
    y = bn_swish.BatchNormActFunction.apply(
        x, module.weight, module.bias, module.running_mean if tracked else None,
        module.running_var if tracked else None, use_batch_stats, momentum, module.eps, ops, counter)[0]
    y.backward(dy)
    return y


@pytest.mark.parametrize("activation", MODULES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_same_bits_as_the_four_pass_path(activation, dtype, option, training, gen):
    """Outputs and gradients bit for bit; running statistics to float64's last bits (ATen's lerp may use an
    FMA where the op's loop does not)."""
    for shape, layout in SHAPES:
        new = _module(activation, shape[1], dtype, training, **OPTIONS[option])
        old = _module(activation, shape[1], dtype, training, **OPTIONS[option])
        for _ in range(2):  # the second step blends into updated running statistics
            x = _input(shape, layout, dtype, gen)
            dy = randn(*shape, gen=gen, scale=1.0).to(dtype)
            x_new, x_old = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
            y_new = new(x_new)
            y_new.backward(dy)
            y_old = _four_pass_step(old, x_old, dy)
            where = f"{shape} {layout}"
            assert torch.equal(y_new, y_old), where
            assert y_new.stride() == y_old.stride(), where
            assert torch.equal(x_new.grad, x_old.grad), where
            for p_new, p_old in zip(new.parameters(), old.parameters()):
                assert p_new.grad.dtype == p_old.dtype and torch.equal(p_new.grad, p_old.grad), where
                p_new.grad = p_old.grad = None
            for (name, b_new), b_old in zip(new.named_buffers(), old.buffers()):
                assert b_new.dtype == b_old.dtype, name
                torch.testing.assert_close(b_new, b_old, rtol=1e-15, atol=1e-16, msg=lambda m: f"{name} {where}: {m}")


@pytest.mark.parametrize("activation", MODULES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "sliced"])
def test_matches_pytorch_in_float64(activation, dtype, layout, gen):
    """Against nn.BatchNorm2d + F.silu / F.mish run in float64 on the same (rounded) values, three steps with
    momentum=None (a cumulative average, num_batches_tracked counting), then eval."""
    shape = (3, 7, 5, 6)
    fused = _module(activation, 7, dtype, True, momentum=None)
    reference = nn.BatchNorm2d(7, momentum=None).double()
    reference.load_state_dict(fused.state_dict())
    act = MODULES[activation][1]
    for training in (True, True, True, False):
        fused.train(training)
        reference.train(training)
        x = _input(shape, layout, dtype, gen)
        dy = randn(*shape, gen=gen, scale=1.0).to(dtype)
        x_fused, x_ref = x.detach().clone().requires_grad_(), x.detach().double().requires_grad_()
        y_fused, y_ref = fused(x_fused), act(reference(x_ref))
        y_fused.backward(dy)
        y_ref.backward(dy.double())
        # fp64: the 1e-10; others the dtype's torch.testing defaults (the result is the float32 math
        # rounded once); fp32 parameter gradients: sums over N*H*W = 90 terms (summation error ~90 ulp).
        tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}
        torch.testing.assert_close(y_fused, y_ref.to(dtype), **tol)
        torch.testing.assert_close(x_fused.grad, x_ref.grad.to(dtype), **tol)
        param_tol = {"rtol": 1.3e-6, "atol": 1e-4} if dtype == torch.float32 else tol
        torch.testing.assert_close(fused.weight.grad, reference.weight.grad.to(dtype), **param_tol)
        torch.testing.assert_close(fused.bias.grad, reference.bias.grad.to(dtype), **param_tol)
        fused.zero_grad(set_to_none=True)
        reference.zero_grad(set_to_none=True)
        for name, buffer in reference.named_buffers():
            torch.testing.assert_close(getattr(fused, name), buffer.to(getattr(fused, name).dtype), **tol)
        reference.load_state_dict(fused.state_dict())  # next step from the same (rounded) statistics
    assert fused.num_batches_tracked.item() == 3
    if layout == "channels_last":
        assert y_fused.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("activation", MODULES)
def test_gradcheck_of_the_layer_op(activation, gen):
    forward = bn_swish_ops.LAYER_OPS[activation][0]
    x = randn(2, 3, 3, 4, dtype=torch.float64, gen=gen).requires_grad_()
    weight = (torch.rand(3, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    bias = randn(3, dtype=torch.float64, gen=gen, scale=1.0).requires_grad_()
    running_mean, running_var = torch.full((3,), 0.2, dtype=torch.float64), torch.full((3,), 1.5, dtype=torch.float64)
    for batch_stats in (True, False):
        def fn(x, w, b):
            stats = (None, None) if batch_stats else (running_mean, running_var)
            return forward(x, w, b, *stats, None, 0.1, 1e-5, batch_stats)[0]

        assert torch.autograd.gradcheck(fn, (x, weight, bias))
        assert torch.autograd.gradcheck(fn, (x.detach().to(memory_format=torch.channels_last).requires_grad_(),
                                             weight, bias))


@pytest.mark.parametrize("activation", MODULES)
def test_opcheck_layer_ops(activation, gen):
    forward, backward = bn_swish_ops.LAYER_OPS[activation]
    x, dy = randn(2, 3, 4, 5, gen=gen), randn(2, 3, 4, 5, gen=gen)
    weight, bias = torch.rand(3, generator=gen) + 0.5, randn(3, gen=gen)
    for sample in (x, x.to(memory_format=torch.channels_last)):
        running = [torch.zeros(3), torch.ones(3), torch.zeros((), dtype=torch.long)]
        torch.library.opcheck(forward, (sample, weight, bias, *running, 0.1, 1e-5, True))
        torch.library.opcheck(forward, (sample, weight, bias, *running[:2], None, 0.1, 1e-5, False))
        torch.library.opcheck(forward, (sample.requires_grad_(), weight.requires_grad_(), bias, None, None, None,
                                        None, 1e-5, True))
        sample, weight = sample.detach(), weight.detach()
        y, mean, invstd, _, _ = forward(sample, weight, bias, None, None, None, 0.1, 1e-5, True)
        for mask in ([True, True, True], [True, False, False], [False, True, True]):
            torch.library.opcheck(backward, (dy, sample, weight, bias, mean, invstd, True, mask))


@pytest.mark.parametrize("activation", MODULES)
def test_saves_input_and_per_channel_stats_like_the_four_pass_path(activation, gen):
    """The same tensors kept for backward (bytes and sizes) as BatchNormActFunction: x, mean, 1/std and the
    parameters by reference."""
    x = randn(2, 6, 4, 4, gen=gen).requires_grad_()
    saved = {}
    for path in ("layer", "four_pass"):
        module = _module(activation, 6, torch.float32, True)
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            module(x) if path == "layer" else _four_pass_step(module, x, torch.ones_like(x))
        saved[path] = sorted((t.numel(), t.dtype.itemsize, t.data_ptr() == x.data_ptr()) for t in kept)
    assert saved["layer"] == saved["four_pass"]
    module = _module(activation, 6, torch.float32, True)
    model = nn.Sequential(nn.Conv2d(6, 6, 1), module, nn.Conv2d(6, 6, 1))
    reference = nn.Sequential(nn.Conv2d(6, 6, 1), MODULES[activation][0](6, backend="reference"), nn.Conv2d(6, 6, 1))
    assert sk.saved_for_backward(model, x).bytes == sk.saved_for_backward(reference, x).bytes


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("activation", MODULES)
def test_one_op_per_direction(activation, gen):
    """The fixed per-layer cost: a training step of one layer dispatches one op forward and one backward
    (the four-pass path: 20 or more), an eval forward one."""
    module = _module(activation, 16, torch.float32, True)
    x = randn(1, 16, 8, 8, gen=gen).requires_grad_()
    dy = randn(1, 16, 8, 8, gen=gen)
    module(x).backward(dy)  # warm
    x.grad = module.weight.grad = module.bias.grad = None  # no accumulation (add_) in the count
    with _CountOps() as forward_ops:
        y = module(x)
    with _CountOps() as backward_ops:
        y.backward(dy)
    assert forward_ops.ops == [f"swishkernels.bn_{activation}_layer_forward.default"]
    # Besides our op: autograd's AccumulateGrad storing x.grad, weight.grad and bias.grad (a detach each).
    assert backward_ops.ops == [f"swishkernels.bn_{activation}_layer_backward.default"] + ["aten.detach.default"] * 3
    with _CountOps() as old_ops:
        _four_pass_step(_module(activation, 16, torch.float32, True), x, dy)
    assert len(old_ops.ops) >= 20  # what the count would show if the layer went back to the Python finishing
    module.eval()
    with torch.no_grad(), _CountOps() as eval_ops:
        module(x)
    assert eval_ops.ops == [f"swishkernels.bn_{activation}_layer_forward.default"]


def test_gradients_asked_for_are_the_only_ones_computed(gen):
    module = _module("swish", 4, torch.float32, True)
    x = randn(2, 4, 3, 3, gen=gen).requires_grad_()
    (grad_x,) = torch.autograd.grad(module(x), x, torch.ones(2, 4, 3, 3))
    assert module.weight.grad is None and grad_x.shape == x.shape
    module.weight.requires_grad_(False)
    module.bias.requires_grad_(False)
    x_frozen = randn(2, 4, 3, 3, gen=gen).requires_grad_()
    module(x_frozen).sum().backward()
    assert x_frozen.grad is not None and module.weight.grad is None
    module.eval()
    y = module(randn(2, 4, 3, 3, gen=gen))  # no input requires grad: no graph
    assert y.grad_fn is None and not y.requires_grad


def test_once_differentiable_and_inplace_checks(gen):
    module = _module("swish", 3, torch.float64, True)
    x = randn(2, 3, 4, 4, dtype=torch.float64, gen=gen).requires_grad_()
    y = module(x)
    assert type(y.grad_fn).__name__ == "BatchNormSwish2dBackward" or y.grad_fn.name() == "BatchNormSwish2dBackward"
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)  # first order with a graph: fine
    with pytest.raises(RuntimeError, match="differentiable once"):
        g.sum().backward()
    base = randn(2, 3, 4, 4, dtype=torch.float64, gen=gen).requires_grad_()
    x = base * 1.0
    y = module(x)
    x.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_running_statistics_versions_are_bumped(gen):
    module = _module("swish", 3, torch.float32, True)
    versions = [module.running_mean._version, module.running_var._version, module.num_batches_tracked._version]
    module(randn(2, 3, 4, 4, gen=gen))
    assert [module.running_mean._version, module.running_var._version,
            module.num_batches_tracked._version] == [v + 1 for v in versions]


def test_backend_is_resolved_once_and_again_when_it_changes(monkeypatch, gen):
    module = sk.BatchNormSwish2d(3)
    x = randn(2, 3, 4, 4, gen=gen)
    module(x)
    assert module.__dict__["_sk_resolved"][2] == "cpu"
    monkeypatch.setenv("SWISHKERNELS_BACKEND", "reference")
    module(x)
    assert module.__dict__["_sk_resolved"][2] == "reference"
    monkeypatch.setenv("SWISHKERNELS_BACKEND", "tpu")
    with pytest.raises(ValueError, match="unknown swishkernels backend"):
        module(x)
    monkeypatch.delenv("SWISHKERNELS_BACKEND")
    module.backend = "cuda"
    with pytest.raises(RuntimeError, match="cuda"):
        module(x)
    module.backend = None
    module(x)
    assert module.__dict__["_sk_resolved"][2] == "cpu"


def test_raw_op_refuses_forward_mode_ad(gen):
    from torch.autograd import forward_ad
    forward = bn_swish_ops.LAYER_OPS["swish"][0]
    x = randn(2, 3, 4, 4, dtype=torch.float64, gen=gen)
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(x, torch.ones_like(x))
        with pytest.raises(RuntimeError, match="forward-mode AD"):
            forward(dual, None, None, None, None, None, 0.1, 1e-5, True)


def test_backend_cache_pickles_and_unfuse_drops_it(gen):
    import copy
    import pickle
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.SiLU())
    assert len(sk.fuse_bn_swish(model).fused) == 1
    x = randn(2, 3, 4, 4, gen=gen)
    model(x)
    assert model[1].__dict__["_sk_resolved"][2] == "cpu"
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(clone.eval()(x), model.eval()(x))
    sk.unfuse_bn_swish(model)
    assert type(model[1]) is nn.BatchNorm2d and "_sk_resolved" not in model[1].__dict__


@pytest.mark.parametrize("activation", MODULES)
def test_graph_shows_its_saved_tensors(activation, gen):
    """sk.tensors_saved_by_graph reads a node's `_saved_*` attributes: the C++ node shows x, mean and 1/std (and
    the parameters, left out with `exclude`), the same bytes as saved-tensor hooks count."""
    module = _module(activation, 6, torch.float32, True)
    x = randn(2, 6, 4, 4, gen=gen).requires_grad_()
    y = module(x)
    node = y.grad_fn
    assert node.name() == f"BatchNorm{activation.capitalize()}2dBackward"
    assert node._saved_x.data_ptr() == x.data_ptr()
    assert node._saved_weight is module.weight and node._saved_bias is module.bias
    assert node._saved_mean.shape == node._saved_invstd.shape == (6,)
    kept = sk.tensors_saved_by_graph(y, exclude=module)
    assert sorted(t.untyped_storage().nbytes() for t in kept) == [24, 24, x.numel() * 4]
    assert sum(t.untyped_storage().nbytes() for t in kept) == sk.saved_for_backward(module, x).bytes
    assert _module(activation, 6, torch.float32, True, affine=False)(x).grad_fn._saved_weight is None
