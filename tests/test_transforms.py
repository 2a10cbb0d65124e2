"""torch.func transforms and forward-mode AD through every backend, against F.silu / F.mish in float64.

Each transform x activation x backend is one test: the functional form, the module and the
autograd.Function must all give PyTorch's numbers (default torch.testing tolerances), with a real
(non-zero) tangent where a tangent is asked for. BatchNormSwish2d must behave like nn.BatchNorm2d
followed by nn.SiLU: same numbers where PyTorch's pair works, the same error where it refuses.
"""
import copy
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import swishkernels as sk
from helpers import randn

PEERS = {"swish": F.silu, "mish": F.mish}
ENTRY_POINTS = ("functional", "module", "function")


def _ours(activation, backend, entry):
    if entry == "functional":
        return lambda v: getattr(sk, activation)(v, backend=backend)
    if entry == "module":
        return {"swish": sk.Swish, "mish": sk.Mish}[activation](backend=backend)
    function = {"swish": sk.SwishFunction, "mish": sk.MishFunction}[activation]
    return lambda v: function.apply(v, backend)


def _forward_ad(f, x, tangent):
    with fwAD.dual_level():
        out = f(fwAD.make_dual(x, tangent))
        primal, out_tangent = fwAD.unpack_dual(out)
    assert out_tangent is not None, "forward-mode AD dropped the tangent"
    return primal, out_tangent


# Each transform: f, x (5 elements), t (a tangent / cotangent), xb (a batch of 3 x 5) -> tensors.
TRANSFORMS = {
    "vmap": lambda f, x, t, xb: vmap(f)(xb),
    "grad": lambda f, x, t, xb: grad(lambda v: (f(v) * t).sum())(x),
    "vjp": lambda f, x, t, xb: vjp(f, x)[1](t),
    "jvp": lambda f, x, t, xb: jvp(f, (x,), (t,)),
    "jacrev": lambda f, x, t, xb: jacrev(f)(x),
    "jacfwd": lambda f, x, t, xb: jacfwd(f)(x),
    "hessian": lambda f, x, t, xb: hessian(lambda v: (f(v) * t).sum())(x),
    "vmap_grad": lambda f, x, t, xb: vmap(grad(lambda v: (f(v) * t).sum()))(xb),  # per-sample grads
    "forward_ad": lambda f, x, t, xb: _forward_ad(f, x, t),
    "jvp_of_vjp": lambda f, x, t, xb: jvp(lambda v: vjp(f, v)[1](t)[0], (x,), (t,)),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_transform_matches_pytorch(backend, activation, transform, entry, gen):
    x = randn(5, dtype=torch.float64, gen=gen)
    t = randn(5, dtype=torch.float64, gen=gen, scale=1.0)
    xb = randn(3, 5, dtype=torch.float64, gen=gen)
    run = TRANSFORMS[transform]
    with warnings.catch_warnings():
        # A missing batching rule would make vmap loop over samples and say so: that is a failure here.
        warnings.filterwarnings("error", message=".*performance drop.*")
        got = run(_ours(activation, backend, entry), x, t, xb)
    expected = run(PEERS[activation], x, t, xb)
    torch.testing.assert_close(got, expected)
    leaves = got if isinstance(got, tuple) else (got,)
    assert all(leaf.abs().max() > 0 for leaf in leaves)  # a dropped tangent would give zeros


@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_vmap_calls_the_op_once_on_the_whole_batch(backend, activation, gen):
    """The ops' batching rules run one kernel on the batched tensor (not one call per sample)."""
    from swishkernels import ops
    op_set = ops.get(backend, activation)
    shapes = []
    real_forward = op_set.forward

    def rule_probe(info, in_dims, x):
        shapes.append(tuple(x.shape))
        return real_forward(x), in_dims[0]

    torch.library.register_vmap(real_forward, rule_probe)
    try:
        xb = randn(4, 3, 2, dtype=torch.float64, gen=gen)
        torch.testing.assert_close(vmap(_ours(activation, backend, "functional"), in_dims=1)(xb),
                                   PEERS[activation](xb).movedim(1, 0))
    finally:
        ops._register_vmap(*op_set)  # restore the real rule
    assert shapes == [(4, 3, 2)]


@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_forward_ad_with_backward_saves_only_the_input(backend, activation, gen):
    """Forward-mode and reverse-mode together: the node still keeps only x for backward."""
    x = randn(6, dtype=torch.float64, gen=gen).requires_grad_()
    tangent = randn(6, dtype=torch.float64, gen=gen)
    with fwAD.dual_level():
        y = getattr(sk, activation)(fwAD.make_dual(x, tangent), backend=backend)
        out_tangent = fwAD.unpack_dual(y).tangent
    saved = y.grad_fn.saved_tensors  # what the primal's backward node keeps (the tangent has its own)
    assert len(saved) == 1 and torch.equal(saved[0], x)
    expected_tangent = jvp(PEERS[activation], (x.detach(),), (tangent,))[1]
    torch.testing.assert_close(out_tangent, expected_tangent)
    y.sum().backward()
    torch.testing.assert_close(x.grad, grad(lambda v: PEERS[activation](v).sum())(x.detach()))


@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_inplace_module_under_a_transform_is_out_of_place_and_correct(backend, activation, gen):
    x = randn(5, dtype=torch.float64, gen=gen)
    t = randn(5, dtype=torch.float64, gen=gen)
    before = x.clone()
    module = {"swish": sk.Swish, "mish": sk.Mish}[activation](inplace=True, backend=backend)
    torch.testing.assert_close(jvp(module, (x,), (t,)), jvp(PEERS[activation], (x,), (t,)))
    assert torch.equal(x, before)


def test_float32_transforms_match_pytorch(backend, gen):
    x = randn(2, 7, gen=gen)
    t = randn(2, 7, gen=gen)
    torch.testing.assert_close(jvp(lambda v: sk.swish(v, backend=backend), (x,), (t,)), jvp(F.silu, (x,), (t,)))
    torch.testing.assert_close(vmap(grad(lambda v: sk.mish(v, backend=backend).sum()))(x),
                               vmap(grad(lambda v: F.mish(v).sum()))(x))


# ---- BatchNormSwish2d against nn.BatchNorm2d + nn.SiLU -------------------------------------------------------

def _bn_pair(gen, training, track_running_stats=True):
    bn = nn.BatchNorm2d(3, track_running_stats=track_running_stats).double()
    with torch.no_grad():
        bn.weight.copy_(randn(3, dtype=torch.float64, gen=gen, scale=0.5) + 1)
        bn.bias.copy_(randn(3, dtype=torch.float64, gen=gen, scale=0.5))
        if track_running_stats:
            bn.running_mean.copy_(randn(3, dtype=torch.float64, gen=gen, scale=0.5))
            bn.running_var.copy_(randn(3, dtype=torch.float64, gen=gen, scale=0.2).abs() + 0.5)
    return bn.train(training)


def _fused_like(bn, backend):
    fused = sk.BatchNormSwish2d(3, track_running_stats=bn.track_running_stats, backend=backend).double()
    fused.load_state_dict(bn.state_dict())
    return fused.train(bn.training)


BN_TRANSFORMS = {
    "vmap": lambda m, x, t: vmap(m)(x.unsqueeze(1).expand(-1, 2, -1, -1, -1) * t.unsqueeze(1)),
    "grad": lambda m, x, t: grad(lambda v: (m(v) * t).sum())(x),
    "jvp": lambda m, x, t: jvp(m, (x,), (t,)),
    "jacrev": lambda m, x, t: jacrev(m)(x[:2, :, :2, :2]),
    "forward_ad": lambda m, x, t: _forward_ad(m, x, t),
}


@pytest.mark.parametrize("transform", list(BN_TRANSFORMS))
@pytest.mark.parametrize("mode", ["eval", "train_without_running_stats"])
def test_batchnorm_swish_transform_matches_pytorch_pair(backend, transform, mode, gen):
    bn = _bn_pair(gen, training=mode != "eval", track_running_stats=mode == "eval")
    fused = _fused_like(bn, backend)
    pair = nn.Sequential(bn, nn.SiLU())
    x = randn(4, 3, 3, 5, dtype=torch.float64, gen=gen, scale=2.0)
    t = randn(4, 3, 3, 5, dtype=torch.float64, gen=gen, scale=1.0)
    run = BN_TRANSFORMS[transform]
    torch.testing.assert_close(run(fused, x, t), run(pair, x, t))


@pytest.mark.parametrize("transform", ["vmap", "grad", "jvp"])
def test_batchnorm_swish_refuses_where_pytorch_refuses(backend, transform, gen):
    """Training with running statistics: PyTorch refuses vmap (in-place update of unbatched running
    stats) and grad/jvp (in-place update of a captured tensor); the fused module raises the same error."""
    bn = _bn_pair(gen, training=True)
    fused = _fused_like(bn, backend)
    x = randn(4, 3, 3, 5, dtype=torch.float64, gen=gen)
    t = randn(4, 3, 3, 5, dtype=torch.float64, gen=gen)
    run = BN_TRANSFORMS[transform]
    with pytest.raises(RuntimeError) as theirs:
        run(nn.Sequential(copy.deepcopy(bn), nn.SiLU()), x, t)
    with pytest.raises(RuntimeError) as ours:
        run(fused, x, t)
    assert str(ours.value).splitlines()[0] == str(theirs.value).splitlines()[0]


def test_batchnorm_swish_forward_ad_in_training_updates_stats_like_pytorch(backend, gen):
    """Forward-mode AD (no functorch) in training mode works in PyTorch; the running stats and the
    tangent must match."""
    bn = _bn_pair(gen, training=True)
    fused = _fused_like(bn, backend)
    x = randn(4, 3, 3, 5, dtype=torch.float64, gen=gen)
    t = randn(4, 3, 3, 5, dtype=torch.float64, gen=gen)
    torch.testing.assert_close(_forward_ad(fused, x, t), _forward_ad(nn.Sequential(bn, nn.SiLU()), x, t))
    torch.testing.assert_close(fused.running_mean, bn.running_mean)
    torch.testing.assert_close(fused.running_var, bn.running_var)
    assert fused.num_batches_tracked == bn.num_batches_tracked == 1


@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_raw_ops_refuse_forward_ad_instead_of_dropping_the_tangent(backend, activation, gen):
    """The torch.library ops themselves have no forward-mode rule: under forward_ad they raise (C++
    ops: PyTorch's own error; Python custom ops: ours), never a missing tangent."""
    from swishkernels import ops
    op_set = ops.get(backend, activation)
    x = randn(5, dtype=torch.float64, gen=gen)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        for call in (lambda: op_set.forward(dual), lambda: op_set.backward(dual, x)):
            with pytest.raises(RuntimeError, match="jvp is not implemented|through the raw op is not supported"):
                call()


@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_raw_ops_refuse_torch_func_jvp(backend, activation, gen):
    """torch.func.jvp of the op itself: the C++ ops hit functorch's refusal of C++ Functions, the Python
    custom ops our refusal (without it the tangent came back as zeros)."""
    from swishkernels import ops
    op_set = ops.get(backend, activation)
    x = randn(5, dtype=torch.float64, gen=gen)
    t = randn(5, dtype=torch.float64, gen=gen)
    for fn in (op_set.forward, lambda v: op_set.backward(t, v)):
        refused = "cannot use C.. torch::autograd::Function|through the raw op is not supported"
        with pytest.raises(RuntimeError, match=refused):
            jvp(fn, (x,), (t,))


@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_raw_inplace_op_under_vmap_writes_the_batched_tensor(backend, activation, gen):
    from swishkernels import ops
    op_set = ops.get(backend, activation)
    xb = randn(3, 4, dtype=torch.float64, gen=gen)
    expected = PEERS[activation](xb)

    def write(v):
        op_set.forward_inplace(v)
        return v

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop.*")
        out = vmap(write)(xb)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(xb, expected)


@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_per_sample_gradients_of_a_model(backend, activation, gen):
    """vmap(grad(functional_call)) over a model's parameters, the per-sample-gradient recipe."""
    from torch.func import functional_call
    ours_class = {"swish": sk.Swish, "mish": sk.Mish}[activation]
    theirs_class = {"swish": nn.SiLU, "mish": nn.Mish}[activation]
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 6), ours_class(backend=backend), nn.Linear(6, 1)).double()
    theirs = nn.Sequential(nn.Linear(5, 6), theirs_class(), nn.Linear(6, 1)).double()
    theirs.load_state_dict(ours.state_dict())
    params = {name: p.detach() for name, p in ours.named_parameters()}
    x = randn(4, 5, dtype=torch.float64, gen=gen)
    target = randn(4, 1, dtype=torch.float64, gen=gen)

    def per_sample(model):
        def loss(p, xi, ti):
            return ((functional_call(model, p, (xi.unsqueeze(0),)) - ti) ** 2).sum()
        return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, target)

    got, expected = per_sample(ours), per_sample(theirs)
    torch.testing.assert_close(got, expected)
    assert got["0.weight"].shape == (4, 6, 5) and got["0.weight"].abs().max() > 0
