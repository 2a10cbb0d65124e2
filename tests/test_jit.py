"""TorchScript: torch.jit.script of sk.Swish / sk.Mish and of a model holding them (saved and loaded
again), and torch.jit.trace of a model fused with sk.fuse_bn_swish, in eval mode, with and without
torch.no_grad()."""
import copy
import io
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import swishkernels as sk
from helpers import randn

MODULES = {"swish": (sk.Swish, F.silu), "mish": (sk.Mish, F.mish)}


def _script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 calls TorchScript deprecated
        return torch.jit.script(module)


def _save_and_load(scripted):
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


class _RecordOps(TorchDispatchMode):
    """Names of the ops that actually ran (a scripted graph holds every branch, so read the calls)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))


def _ops_run(fn, *args):
    with _RecordOps() as recorder:
        fn(*args)
    return [name for name in recorder.names if name.startswith("swishkernels::")]


OPS_OF_BACKEND = {"cpu": "swishkernels::{}_forward", "reference": "swishkernels::reference_{}_forward",
                  "triton": "swishkernels::triton_{}_forward"}


@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_script_module_calls_the_backend_op_and_differentiates(backend, activation, gen):
    module_class, peer = MODULES[activation]
    scripted = _script(module_class(backend=backend))
    x = randn(3, 7, dtype=torch.float64, gen=gen).requires_grad_()
    y = scripted(x)
    torch.testing.assert_close(y, peer(x))
    (got,) = torch.autograd.grad(y.sum(), x)
    (expected,) = torch.autograd.grad(peer(x).sum(), x)
    torch.testing.assert_close(got, expected)
    with torch.no_grad():
        assert _ops_run(scripted, x) == [OPS_OF_BACKEND[backend].format(activation)]


@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_scripted_inplace_writes_only_without_grad(backend, activation, gen):
    module_class, peer = MODULES[activation]
    scripted = _script(module_class(inplace=True, backend=backend))
    x = randn(9, gen=gen)
    expected = peer(x)
    with torch.no_grad():
        out = scripted(x)
    assert out is x or out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(x, expected)
    leaf = randn(9, gen=gen).requires_grad_()
    before = leaf.detach().clone()
    scripted(leaf).sum().backward()
    assert torch.equal(leaf.detach(), before)


def test_script_uses_the_environment_backend_at_script_time(monkeypatch, gen):
    monkeypatch.setenv("SWISHKERNELS_BACKEND", "reference")
    scripted = _script(sk.Swish())
    x = randn(5, gen=gen)
    assert _ops_run(scripted, x) == ["swishkernels::reference_swish_forward"]
    torch.testing.assert_close(scripted(x), F.silu(x))


def test_script_rejects_a_backend_for_another_device(gen):
    if "cpu" not in sk.available_backends("cpu"):
        pytest.skip("the C++ extension is not built")
    scripted = _script(sk.Swish(backend="cuda"))
    with pytest.raises(torch.jit.Error, match="backend=cuda cannot run cpu tensors"):
        scripted(randn(4, gen=gen))


def _model():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), sk.Swish(),
                         nn.Conv2d(8, 8, 1), sk.Mish(inplace=True), nn.Conv2d(8, 4, 1), nn.SiLU())


def test_script_a_model_save_and_load(gen):
    model = _model().eval()
    scripted = _script(model)
    assert type(model[2]) is sk.Swish  # scripting leaves the eager model as it was
    loaded = _save_and_load(scripted)
    x = randn(2, 3, 9, 11, gen=gen)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(scripted(x), expected)
        torch.testing.assert_close(loaded(x), expected)
    model.train()
    loaded.train()
    y = randn(2, 3, 9, 11, gen=gen)
    loaded(y).sum().backward()
    assert all(p.grad is not None for p in loaded.parameters())


@pytest.mark.parametrize("no_grad", [False, True], ids=["grad", "no_grad"])
def test_trace_fused_model_in_eval(no_grad, gen):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(),
                          nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), sk.Swish(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.copy_(randn(8, gen=gen, scale=0.5))
            bn.running_var.copy_(randn(8, gen=gen, scale=0.3).abs() + 0.5)
    expected_model = model.eval()
    x = randn(2, 3, 10, 12, gen=gen)
    with torch.no_grad():
        expected = expected_model(x)
    fused = copy.deepcopy(model)
    assert len(sk.fuse_bn_swish(fused).fused) == 2
    fused.eval()
    with torch.set_grad_enabled(not no_grad), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(fused, x)
    assert "swishkernels::" not in str(traced.inlined_graph)  # both Swish were fused: PyTorch ops only
    loaded = _save_and_load(traced)  # no Python calls in the graph: it can be written out
    other = randn(3, 3, 7, 5, gen=gen)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), expected)
        torch.testing.assert_close(loaded(x), expected)
        torch.testing.assert_close(loaded(other), expected_model(other))


def test_script_without_the_extension_uses_the_reference_ops(tmp_path):
    """Without swishkernels._C the C++ op names do not exist; scripting must still work (reference)."""
    import subprocess
    import sys
    script = (
        "import warnings, torch, torch.nn.functional as F, swishkernels as sk\n"
        "warnings.simplefilter('ignore')\n"
        "assert 'cpu' not in sk.available_backends('cpu')\n"
        "x = torch.randn(6)\n"
        "torch.testing.assert_close(torch.jit.script(sk.Mish())(x), F.mish(x))\n"
        "try:\n"
        "    torch.jit.script(sk.Swish(backend='cpu'))(x)\n"
        "except Exception as e:\n"
        "    assert 'needs the C++ extension' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('backend=cpu ran without the extension')\n")
    env = dict(__import__("os").environ, SWISHKERNELS_SKIP_EXT="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
