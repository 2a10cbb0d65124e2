"""Helpers the tests import (`from helpers import randn`; tests/ is on pytest's pythonpath): random inputs,
the dtype and backend lists, the lower-instruction-set runner and the saved-bytes count for models."""
import os
import subprocess
import sys

import torch

import swishkernels as sk

ALL_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
CPU_BACKENDS = sk.available_backends("cpu")
# ATEN_CPU_CAPABILITY values below this CPU's: ATen dispatches to the lower instruction set and the
# extension's CPU kernels follow it, so each lower copy of them can be tested here.
LOWER_CAPABILITIES = {"AVX512": ("default", "avx2"), "AVX2": ("default",), "NO AVX": (),
                      "DEFAULT": ()}.get(torch.backends.cpu.get_cpu_capability(), ("default",))


def run_with_lower_capability(capability, test_file, selection):
    """Runs the tests of test_file matching `-k selection` in a subprocess whose ATen (and so our C++
    kernels, which follow ATen's choice) uses a lower instruction set; fails with its output."""
    expected = {"default": ("NO AVX", "DEFAULT"), "avx2": ("AVX2",)}[capability]
    script = (
        "import sys, pytest, torch\n"
        f"assert torch.backends.cpu.get_cpu_capability() in {expected!r}\n"
        f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {str(test_file)!r}, '-k', {selection!r}]))\n")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, SWISHKERNELS_LOWERED_CAPABILITY="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def randn(*shape, dtype=torch.float32, gen=None, scale=3.0, device="cpu"):
    """Random normal values spread over the interesting range of the activations (never zeros)."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    return x.to(device=device, dtype=dtype)


def saved_activation_bytes(model, x, recompute=False):
    """Bytes autograd keeps for backward in one forward of model(x) (sk.saved_for_backward, parameters and
    buffers left out). The RNG is seeded first, so dropout draws the same masks (and so the same running
    statistics) for every model compared."""
    torch.manual_seed(0)
    return sk.saved_for_backward(model, x, recompute=recompute).bytes


def saved_by_graph(outputs, exclude=None):
    """{storage address: bytes} of sk.tensors_saved_by_graph(outputs, exclude)."""
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in sk.tensors_saved_by_graph(outputs, exclude)}


def check_same_step(model, fused, x):
    """One step of `fused` equals one of `model` (e.g. the unfused original): outputs, input and parameter gradients
    (a backward through fixed, non-uniform weights) and buffers (running statistics)."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = model(xa), fused(xb)
    torch.testing.assert_close(yb, ya)
    weights = torch.linspace(-1, 1, ya.numel(), dtype=ya.dtype).view_as(ya)
    (ya * weights).sum().backward()
    (yb * weights).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad)
    for (name, p), q in zip(model.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    for a, b in zip(model.buffers(), fused.buffers()):
        torch.testing.assert_close(b, a)
