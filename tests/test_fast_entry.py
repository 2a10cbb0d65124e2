"""The fast entry of sk.swish / sk.mish / sk.Swish() / sk.Mish() (csrc/module.cpp, functional.py) and the
C++ autograd nodes behind it (csrc/autograd.cpp): which calls take it, that it still goes through the
dispatcher (modes see exactly one op each way), and that what it computes, saves and refuses is what the
checked path and PyTorch's F.silu / F.mish give."""
import importlib.util

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import swishkernels as sk
from helpers import randn
from swishkernels import functional

if importlib.util.find_spec("swishkernels._C") is None or sk.available_backends("cpu")[0] != "cpu":
    pytest.skip("the fast entry is part of the C++ extension", allow_module_level=True)
import swishkernels._C as _C  # noqa: E402

PEERS = {"swish": F.silu, "mish": F.mish}
MODULES = {"swish": sk.Swish, "mish": sk.Mish}
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FORMS = ("function", "module")


@pytest.fixture(params=sorted(PEERS))
def activation(request):
    return request.param


def call(form, activation, inplace=False):
    if form == "function":
        return getattr(sk, activation)
    return MODULES[activation](inplace=inplace)


@pytest.fixture
def checked_path_forbidden(monkeypatch):
    """Makes the checked (Python) path raise: a call that still works took the fast entry."""
    def forbidden(*args, **kwargs):
        raise AssertionError("took the checked path")
    monkeypatch.setattr(functional, "_forward", forbidden)
    monkeypatch.setattr(functional, "activate", forbidden)


@pytest.fixture(autouse=True)
def fast_entry_enabled():
    sk.swish(torch.ones(1))  # the first call on CPU resolves the default backend, which enables the entry
    assert _C._fast_entry_applies(torch.ones(1))


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "swishkernels":
            self.ops.append(func.__name__)
        return func(*args, **(kwargs or {}))


# ------------------------------------------------------------------------------ which calls take it


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("numel", [64, 70000])  # 70000: above the size where the call releases the GIL
def test_plain_call_takes_the_fast_entry_and_dispatches_once_each_way(activation, form, numel,
                                                                      checked_path_forbidden, gen):
    x = randn(numel, gen=gen).requires_grad_()
    with CountOps() as counter:
        y = call(form, activation)(x)
        assert counter.ops == [f"{activation}_forward.default"]
        y.backward(torch.ones_like(y))
    assert counter.ops == [f"{activation}_forward.default", f"{activation}_backward.default"]
    torch.testing.assert_close(x.grad, torch.autograd.grad(PEERS[activation](x).sum(), x)[0])
    with CountOps() as counter, torch.no_grad():
        call(form, activation)(x)
    assert counter.ops == [f"{activation}_forward.default"]


def test_inplace_module_takes_the_fast_entry(activation, checked_path_forbidden, gen):
    x = randn(64, gen=gen)
    expected = PEERS[activation](x)
    version = x._version
    with CountOps() as counter:
        y = MODULES[activation](inplace=True)(x)
    assert y is x and x._version == version + 1
    assert counter.ops == [f"{activation}_forward_inplace.default"]
    torch.testing.assert_close(x, expected)
    # autograd needs x: computed out of place, x untouched
    leaf = randn(64, gen=gen).requires_grad_()
    before = leaf.detach().clone()
    y = MODULES[activation](inplace=True)(leaf)
    assert y is not leaf and torch.equal(leaf.detach(), before)
    assert y.grad_fn.name() == ("SwishBackward" if activation == "swish" else "MishBackward")


class Marked(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        Marked.seen.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


class RecordFunctions(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


def op(activation):
    return getattr(torch.ops.swishkernels, f"{activation}_forward").default


@pytest.mark.parametrize("form", FORMS)
def test_subclass_and_torch_function_mode_see_the_op(activation, form, gen):
    """__torch_function__ (a subclass's or a mode's) is honoured as for the torch.ops call: the entry
    steps aside and the checked path's op call reaches it."""
    x = randn(8, gen=gen)
    Marked.seen = []
    y = call(form, activation)(x.as_subclass(Marked))
    assert type(y) is Marked and op(activation) in Marked.seen
    with RecordFunctions() as mode:
        call(form, activation)(x)
    assert op(activation) in mode.seen


@pytest.mark.parametrize("form", FORMS)
def test_fake_tensors_get_the_ops_fake_kernels(activation, form):
    """FakeTensorMode (torch.compile's and export's shape propagation): a FakeTensor is a subclass, so the
    checked path runs the op, whose fake kernel keeps the layout; autograd still records our node."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(2, 3, 4, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
        y = call(form, activation)(x)
        assert type(y) is FakeTensor and y.shape == x.shape and y.stride() == x.stride()
        assert y.grad_fn.name() == ("SwishBackward" if activation == "swish" else "MishBackward")
        y.sum().backward()
        assert type(x.grad) is FakeTensor and x.grad.stride() == x.stride()


@pytest.mark.parametrize("name, context", [
    ("vmap", lambda f: lambda v: torch.func.vmap(f)(v.unsqueeze(0))),
    ("grad", lambda f: lambda v: torch.func.grad(lambda u: f(u).sum())(v)),
    ("jit.trace", lambda f: lambda v: torch.jit.trace(f, v, check_trace=False)(v)),
])
def test_steps_aside_under_transforms_and_tracing(activation, name, context, gen):
    x = randn(6, dtype=torch.float64, gen=gen)
    seen = []

    def probe(v):
        seen.append(_C._fast_entry_applies(v))
        return getattr(sk, activation)(v)

    context(probe)(x)
    assert seen and not any(seen), name
    with fwAD.dual_level():
        assert not _C._fast_entry_applies(x)


def test_steps_aside_when_the_backend_is_chosen_elsewhere(activation, monkeypatch, gen):
    x = randn(6, gen=gen).requires_grad_()
    fast = getattr(_C, activation)
    assert fast(torch.ones(2, dtype=torch.int32)) is None  # the checked path raises our TypeError
    assert fast(torch.ones(2).to_sparse()) is None
    assert fast(torch.ones(2, device="meta")) is None  # the meta device's default backend is not ours
    assert fast(3.0) is None
    monkeypatch.setenv("SWISHKERNELS_BACKEND", "reference")
    assert fast(x) is None
    y = getattr(sk, activation)(x)
    assert "reference" in type(y.grad_fn).__name__.lower() or y.grad_fn.name() not in (
        "SwishBackward", "MishBackward")
    monkeypatch.setenv("SWISHKERNELS_BACKEND", "")  # empty: no request, the default backend
    assert fast(x) is not None


def test_errors_keep_their_wording(activation):
    fn, module = getattr(sk, activation), MODULES[activation]()
    for f in (fn, module):
        with pytest.raises(TypeError, match="expected a torch.Tensor, got list"):
            f([1.0, 2.0])
        with pytest.raises(TypeError, match=f"swishkernels.{activation}: unsupported dtype torch.int32"):
            f(torch.ones(3, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="refers to a single memory location"):
        MODULES[activation](inplace=True)(torch.randn(1, 3).expand(4, 3))


# --------------------------------------------------------------------------- what it computes


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed", "strided slice"])
def test_matches_pytorch_and_float64(activation, form, dtype, layout, checked_path_forbidden, gen):
    base = randn(3, 5, 7, 9, dtype=dtype, gen=gen)
    x = {"contiguous": base, "channels_last": base.contiguous(memory_format=torch.channels_last),
         "transposed": base.transpose(1, 3), "strided slice": base[:, ::2, :, 1:]}[layout]
    x = x.detach().requires_grad_()
    dy = randn(*x.shape, dtype=dtype, gen=gen, scale=1.0)
    y = call(form, activation)(x)
    (dx,) = torch.autograd.grad(y, x, dy)
    x_ref = x.detach().requires_grad_()
    y_ref = PEERS[activation](x_ref)
    (dx_ref,) = torch.autograd.grad(y_ref, x_ref, dy)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)
    x64 = x.detach().double().requires_grad_()
    y64 = PEERS[activation](x64)
    (dx64,) = torch.autograd.grad(y64, x64, dy.double())
    torch.testing.assert_close(y, y64.to(dtype))
    torch.testing.assert_close(dx, dx64.to(dtype))
    if layout != "strided slice":  # a dense input keeps its layout
        assert y.stride() == x.stride() and dx.stride() == x.stride()


# ----------------------------------------------------------------------- the C++ autograd node


@pytest.mark.parametrize("form", FORMS)
def test_saves_only_x(activation, form, gen):
    x = randn(4, 8, 5, gen=gen).requires_grad_()
    saved = sk.saved_for_backward(call(form, activation), x)
    assert (saved.bytes, saved.tensors) == (x.numel() * x.element_size(), 1)


def test_inplace_change_of_x_after_forward_raises_at_backward(activation, gen):
    leaf = randn(16, gen=gen).requires_grad_()
    x = leaf * 1.0
    y = getattr(sk, activation)(x)
    x.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_second_backward_without_retain_graph_raises(activation, gen):
    x = randn(16, gen=gen).requires_grad_()
    y = getattr(sk, activation)(x)
    y.sum().backward(retain_graph=True)
    y.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.sum().backward()


def test_double_and_triple_backward_match_pytorch(activation, gen):
    x = randn(33, dtype=torch.float64, gen=gen).requires_grad_()
    v = randn(33, dtype=torch.float64, gen=gen, scale=1.0)
    results = []
    for fn in (getattr(sk, activation), PEERS[activation]):
        (g,) = torch.autograd.grad(fn(x), x, v, create_graph=True)
        (gg,) = torch.autograd.grad(g, x, v, create_graph=True)
        (ggg,) = torch.autograd.grad(gg.sum(), x)
        results.append((g, gg, ggg))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs)
    fn = getattr(sk, activation)
    assert torch.autograd.gradgradcheck(fn, (x[:7].detach().requires_grad_(),))


def test_no_grad_and_inference_mode_record_nothing(activation, gen):
    x = randn(8, gen=gen).requires_grad_()
    with torch.no_grad():
        assert getattr(sk, activation)(x).grad_fn is None
    with torch.inference_mode():
        y = getattr(sk, activation)(x)
    assert y.grad_fn is None and y.is_inference()


def test_compiled_autograd_runs_the_nodes(gen):
    """torch._dynamo.compiled_autograd calls a node through compiled_args/apply_with_saved (a plain
    torch::autograd::Node raises 'compiled_args not implemented')."""
    from torch._dynamo import compiled_autograd
    for activation in sorted(PEERS):
        x = randn(64, gen=gen).requires_grad_()
        with compiled_autograd._enable(torch.compile(backend="aot_eager")):
            getattr(sk, activation)(x).sum().backward()
        torch.testing.assert_close(x.grad, torch.autograd.grad(PEERS[activation](x).sum(), x)[0])
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.parametrize("form", FORMS)
def test_cuda_tensors_take_the_fast_entry_into_the_cuda_kernels(activation, form, monkeypatch, gen):
    """Where CUDA's default backend is the extension (no Triton), CUDA tensors take the same entry: it
    dispatches, so the CUDA kernels run. Forced on here, since with Triton installed Triton is the default."""
    from swishkernels import backends
    if not backends.extension_has_cuda():
        pytest.skip("swishkernels._C was built without CUDA")
    _C._set_fast_entry("cuda", True)
    try:
        monkeypatch.setattr(functional, "_forward", None)  # the checked path would fail: None is not callable
        monkeypatch.setattr(functional, "activate", None)
        x = randn(3, 4097, gen=gen).cuda().requires_grad_()
        with CountOps() as counter:
            y = call(form, activation)(x)
            y.backward(torch.ones_like(y))
        assert counter.ops == [f"{activation}_forward.default", f"{activation}_backward.default"]
        x_ref = x.detach().requires_grad_()
        y_ref = PEERS[activation](x_ref)
        y_ref.backward(torch.ones_like(y_ref))
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(x.grad, x_ref.grad)
    finally:
        _C._set_fast_entry("cuda", sk.available_backends("cuda")[0] == "cuda")
