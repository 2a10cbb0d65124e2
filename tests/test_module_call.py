"""sk.Swish() / sk.Mish() called as modules: the shortcut past nn.Module.__call__ (modules.py __call__,
csrc/module.cpp module_call) is taken only when nothing but forward would run; hooks, Module.compile(), a
forward set on the instance or a subclass, a named backend, torch.fx and torch.compile all get what
nn.Module.__call__ gives them."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules import module as nn_module

import swishkernels as sk
from helpers import randn

PEERS = {"swish": F.silu, "mish": F.mish}
MODULES = {"swish": sk.Swish, "mish": sk.Mish}


@pytest.fixture(params=sorted(PEERS))
def activation(request):
    return request.param


@pytest.fixture(autouse=True)
def fast_entry_enabled():
    sk.swish(torch.ones(1))  # the first call on CPU resolves the default backend, which enables the entry


@pytest.fixture
def module_call_counted(monkeypatch):
    """Counts the calls that went through nn.Module.__call__ (the path without the shortcut)."""
    calls = []
    original = nn.Module.__call__

    def counted(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(nn.Module, "__call__", counted)
    return calls


def test_plain_call_skips_nn_module_call(activation, module_call_counted, gen):
    x = randn(64, gen=gen).requires_grad_()
    y = MODULES[activation]()(x)
    assert module_call_counted == []
    torch.testing.assert_close(y, PEERS[activation](x))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.autograd.grad(PEERS[activation](x).sum(), x)[0])
    with torch.no_grad():
        x2 = randn(64, gen=gen)
        version = x2._version
        assert MODULES[activation](inplace=True)(x2) is x2 and x2._version == version + 1
    assert module_call_counted == []


def test_module_hooks_run(activation, module_call_counted, gen):
    module = MODULES[activation]()
    x = randn(64, gen=gen).requires_grad_()
    seen = []
    module.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    module.register_forward_hook(lambda m, args, out: out + 1)
    module.register_full_backward_hook(lambda m, grad_in, grad_out: seen.append(grad_out[0].clone()))
    y = module(x)
    torch.testing.assert_close(y, PEERS[activation](x * 2) + 1)
    y.sum().backward()
    assert len(seen) == 1 and torch.equal(seen[0], torch.ones(64))
    assert module_call_counted == [type(module).__name__]


@pytest.mark.parametrize("register", [nn_module.register_module_forward_hook,
                                      nn_module.register_module_forward_pre_hook,
                                      nn_module.register_module_full_backward_hook,
                                      nn_module.register_module_full_backward_pre_hook])
def test_global_hooks_run(activation, register, module_call_counted, gen):
    calls = []
    handle = register(lambda *args: calls.append(1))
    try:
        x = randn(64, gen=gen).requires_grad_()
        MODULES[activation]()(x).sum().backward()
    finally:
        handle.remove()
    assert calls and module_call_counted == [MODULES[activation].__name__]
    MODULES[activation]()(x)  # the hook removed: the shortcut again
    assert module_call_counted == [MODULES[activation].__name__]


def test_module_compile_and_instance_forward_are_honoured(activation, gen):
    x = randn(64, gen=gen)
    module = MODULES[activation]()
    module._compiled_call_impl = lambda x: "compiled"  # what Module.compile() sets
    assert module(x) == "compiled"
    module = MODULES[activation]()
    module.forward = lambda x: "instance forward"
    assert module(x) == "instance forward"


def test_subclass_forward_and_named_backend_are_honoured(activation, module_call_counted, gen):
    class Scaled(MODULES[activation]):
        def forward(self, x):
            return super().forward(x) * 3

    x = randn(64, gen=gen)
    torch.testing.assert_close(Scaled()(x), PEERS[activation](x) * 3)
    torch.testing.assert_close(MODULES[activation](backend="reference")(x), PEERS[activation](x))
    assert module_call_counted == ["Scaled", MODULES[activation].__name__]


def test_keyword_call_and_non_tensors_take_nn_module_call(activation, module_call_counted, gen):
    x = randn(64, gen=gen)
    torch.testing.assert_close(MODULES[activation]()(x=x), PEERS[activation](x))
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        MODULES[activation]()([1.0, 2.0])
    assert len(module_call_counted) == 2


class ActivationsAsLeaves(torch.fx.Tracer):
    def is_leaf_module(self, m, qualified_name):
        return isinstance(m, (sk.Swish, sk.Mish)) or super().is_leaf_module(m, qualified_name)


def test_fx_sees_the_module_call(activation):
    """torch.fx records module calls by patching nn.Module.__call__: the shortcut must step aside for its
    Proxy and reach the patched call (a leaf module becomes one call_module node)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), MODULES[activation]())
    graph = ActivationsAsLeaves().trace(model)
    assert [n.op for n in graph.nodes] == ["placeholder", "call_module", "call_module", "output"]


def test_torch_compile_fullgraph(activation, gen):
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), MODULES[activation](), nn.Conv2d(4, 2, 1))
    x = randn(2, 3, 8, 8, gen=gen)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("form", ["function", "module"])
def test_first_call_of_the_process_under_torch_compile(activation, form, monkeypatch, gen):
    """The first call on a device type resolves the backend and enables the fast entry; traced by
    torch.compile it must not call into the extension (dynamo cannot: with fullgraph=True, an error)."""
    from swishkernels import functional
    monkeypatch.setattr(functional, "_DEFAULT_OPS", {})
    monkeypatch.setattr(functional, "_CPU_DEFAULT_OPS", {})
    torch._dynamo.reset()
    act = getattr(sk, activation) if form == "function" else MODULES[activation]()
    compiled = torch.compile(lambda x: act(x) * 2, fullgraph=True, backend="aot_eager")
    x = randn(64, gen=gen)
    torch.testing.assert_close(compiled(x), PEERS[activation](x) * 2)
    assert not functional._CPU_DEFAULT_OPS  # nothing cached while tracing; an eager call of the checked path does it
