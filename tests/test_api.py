"""The public API contract (README "Use", ARCHITECTURE.md "Rules"): names, backend choice and its errors,
modules, in-place rules."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import swishkernels as sk
from helpers import CPU_BACKENDS, randn
from swishkernels import backends, reference


def test_public_names():
    for name in ("swish", "mish", "Swish", "Mish", "SwishFunction", "MishFunction",
                 "available_backends", "replace_activations"):
        assert hasattr(sk, name), name


def test_available_backends_here():
    """This machine has no GPU: no backend runs CUDA tensors; on CPU the C++ extension comes first, and
    Triton is there only because the tests switched its interpreter on."""
    if not torch.cuda.is_available():
        assert sk.available_backends("cuda") == []
    cpu = sk.available_backends("cpu")
    assert "reference" in cpu and "triton" in cpu
    if os.environ.get("SWISHKERNELS_SKIP_EXT") != "1":
        # `make test` builds the extension: if it is missing, the C++ backend went untested.
        assert cpu[0] == "cpu", backends.EXTENSION_ERROR


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64, torch.uint8])
@pytest.mark.parametrize("form", ["function", "module", "inplace module", "autograd.Function"])
@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_bad_dtype_names_the_dtype(activation, form, dtype, backend):
    call = {
        "function": lambda x: getattr(sk, activation)(x, backend=backend),
        "module": lambda x: sk.Swish(backend=backend)(x) if activation == "swish" else sk.Mish(backend=backend)(x),
        "inplace module": lambda x: (sk.Swish if activation == "swish" else sk.Mish)(True, backend)(x),
        "autograd.Function": lambda x: (sk.SwishFunction if activation == "swish" else sk.MishFunction).apply(
            x, backend),
    }[form]
    with pytest.raises(TypeError, match=str(dtype)):
        call(torch.ones(3, dtype=dtype))


def test_bad_dtype_rejected_by_every_backend(backend):
    from swishkernels import ops
    with pytest.raises((TypeError, RuntimeError), match="(?i)int"):
        ops.get(backend, "swish").forward(torch.ones(3, dtype=torch.int32))


def test_unknown_backend_is_value_error():
    with pytest.raises(ValueError, match="known backends"):
        sk.swish(torch.randn(3), backend="cudnn")


def test_unavailable_backend_is_runtime_error_with_reason_and_alternatives():
    with pytest.raises(RuntimeError, match="cpu backend runs CPU tensors only|not built") as info:
        sk.swish(torch.randn(3, device="meta"), backend="cpu")
    assert "Available for meta" in str(info.value)


def test_cuda_backend_on_cpu_tensor_says_why():
    with pytest.raises(RuntimeError, match="cuda backend runs CUDA tensors only|not built"):
        sk.swish(torch.randn(3), backend="cuda")


def test_env_var_chooses_backend(monkeypatch):
    calls = []
    from swishkernels import ops
    real_get = ops.get
    monkeypatch.setattr(ops, "get", lambda b, a: calls.append(b) or real_get(b, a))
    monkeypatch.setenv("SWISHKERNELS_BACKEND", "reference")
    sk.swish(torch.randn(3))
    assert calls == ["reference"]
    sk.swish(torch.randn(3), backend=CPU_BACKENDS[-1])  # the argument beats the variable
    assert calls[-1] == CPU_BACKENDS[-1]
    monkeypatch.setenv("SWISHKERNELS_BACKEND", "tpu")
    with pytest.raises(ValueError, match="tpu"):
        sk.swish(torch.randn(3))


def _run_python(code, **env):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_triton_on_cpu_needs_the_interpreter():
    out = _run_python(
        "import torch, swishkernels as sk\n"
        "print('triton' in sk.available_backends('cpu'))\n"
        "try:\n    sk.swish(torch.randn(3), backend='triton')\n"
        "except RuntimeError as e:\n    print(e)\n",
        TRITON_INTERPRET="0")
    assert out.startswith("False") and "TRITON_INTERPRET=1" in out


def test_imports_and_works_without_triton_or_extension():
    """Block both imports: the package still imports, leaves those backends out, and says why."""
    out = _run_python(
        "import sys; sys.modules['triton'] = None\n"
        "import importlib.util as u; real = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n == 'triton' else real(n, *a)\n"
        "import torch, swishkernels as sk\n"
        "from swishkernels import backends\n"
        "print(sk.available_backends('cpu'))\n"
        "print(backends.unavailable_reason('triton', 'cpu'))\n"
        "print(backends.unavailable_reason('cpu', 'cpu'))\n"
        "x = torch.randn(5, requires_grad=True); y = sk.Swish()(x); y.sum().backward()\n"
        "print(torch.allclose(y, torch.nn.functional.silu(x)))\n",
        SWISHKERNELS_SKIP_EXT="1")
    lines = out.splitlines()
    assert lines[0] == "['reference']"
    assert "Triton is not installed" in lines[1]
    assert "SWISHKERNELS_SKIP_EXT" in lines[2]
    assert lines[3] == "True"


@pytest.mark.parametrize("module_cls, torch_fn", [(sk.Swish, F.silu), (sk.Mish, F.mish)])
def test_inplace_only_without_grad(module_cls, torch_fn, backend, gen):
    x = randn(4, 5, gen=gen)
    want = torch_fn(x)
    inference = x.clone()
    out = module_cls(inplace=True, backend=backend)(inference)
    assert out is inference  # written into the input: no new allocation at inference
    torch.testing.assert_close(inference, want)

    training = x.clone().requires_grad_(True)
    out = module_cls(inplace=True, backend=backend)(training)
    assert out is not training and torch.equal(training.detach(), x)  # input intact for backward
    torch.testing.assert_close(out, want)

    with torch.no_grad():
        leaf = x.clone().requires_grad_(True)
        out = module_cls(inplace=True, backend=backend)(leaf)
        assert out is leaf


def test_inplace_on_non_dense_view_writes_through(backend, gen):
    base = randn(6, 8, gen=gen)
    want = base.clone()
    want[:, ::2] = F.silu(want[:, ::2])
    sk.Swish(inplace=True, backend=backend)(base[:, ::2])
    torch.testing.assert_close(base, want)


def test_modules_are_drop_in(gen):
    x = randn(2, 3, 4, gen=gen)
    torch.testing.assert_close(sk.Swish()(x), nn.SiLU()(x))
    torch.testing.assert_close(sk.Mish()(x), nn.Mish()(x))
    assert "inplace=True" in repr(sk.Swish(inplace=True)) and "reference" in repr(sk.Mish(backend="reference"))
    assert sk.Swish().state_dict() == {}  # nothing to load or save, like nn.SiLU


def test_seed_inplace_swish_changes_its_input_ours_does_not(gen):
    """The 2019 bug: `x.mul_(sigmoid(x))` overwrote x, so a shortcut reading x later saw Swish(x)."""
    x = randn(100, gen=gen)
    seed_input, our_input = x.clone(), x.clone()
    reference.SeedInplaceSwish()(seed_input)
    sk.Swish()(our_input)
    assert not torch.equal(seed_input, x)
    assert torch.equal(our_input, x)


def test_replace_activations_counts_and_preserves_outputs(gen):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.SiLU(inplace=True),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.Mish(), nn.Sequential(nn.SiLU())),
        nn.LeakyReLU(0.1),
    )
    x = randn(1, 3, 8, 8, gen=gen)
    with torch.no_grad():
        want = model[:3](x)
    assert sk.replace_activations(model) == 3
    assert isinstance(model[1], sk.Swish) and model[1].inplace
    assert isinstance(model[2][1], sk.Mish) and isinstance(model[2][2][0], sk.Swish)
    assert isinstance(model[3], nn.LeakyReLU)
    with torch.no_grad():
        torch.testing.assert_close(model[:3](x), want)
    assert sk.replace_activations(model) == 0  # idempotent: our modules are not replaced again
    assert sk.replace_activations(model, {nn.LeakyReLU: sk.Swish}) == 1
    assert isinstance(model[3], sk.Swish)
    assert sk.replace_activations(model, {sk.Swish: lambda old: sk.Mish(inplace=old.inplace)}) == 3


def test_replace_activations_in_module_list():
    holder = nn.ModuleList([nn.SiLU(), nn.ReLU(), nn.Mish()])
    assert sk.replace_activations(holder) == 2
    assert [type(m) for m in holder] == [sk.Swish, nn.ReLU, sk.Mish]


def test_replace_activations_rejects_bad_replacement():
    with pytest.raises(TypeError, match="not an nn.Module"):
        sk.replace_activations(nn.Sequential(nn.SiLU()), {nn.SiLU: lambda old: 42})
