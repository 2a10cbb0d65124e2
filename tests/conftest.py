"""Shared test setup. Triton kernels run under the interpreter on machines without a GPU; that switch
has to be made before swishkernels first imports its Triton kernels, hence here, at the very top."""
import os
import subprocess
import sys
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import swishkernels as sk  # noqa: E402

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


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run with `pytest -m gpu` on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    """Every backend that can run CPU tensors here (the tests below run on CPU tensors)."""
    return request.param


@pytest.fixture
def gen(request):
    """A generator seeded from the test's id: each test draws different random inputs, and a failure
    reproduces when the test is rerun."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def randn(*shape, dtype=torch.float32, gen=None, scale=3.0, device="cpu"):
    """Random normal values spread over the interesting range of the activations (never zeros)."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    return x.to(device=device, dtype=dtype)


@pytest.fixture
def poisoned_allocations():
    """Every tensor allocated during a test starts as NaN (deterministic mode fills uninitialised memory,
    the op's own outputs included), so an element a kernel fails to write shows up."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    assert torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tiny trained run shared by the yolo val, detect and weights tests (yolov3-tiny, 1 epoch on 8
    generated 64-px images, CPU: a few seconds). Here rather than in tests/yolo/conftest.py: a second module
    named `conftest` would shadow this one for the tests that import helpers from it."""
    from yolo.train import run

    root = tmp_path_factory.mktemp("trained")
    result = run(data="shapes:n_train=8,n_val=4,img_size=64", cfg="yolov3-tiny", img_size=64, batch_size=4,
                 device="cpu", workers=0, seed=0, epochs=1, cache_dir=str(root / "cache"),
                 project=str(root / "runs"), verbose=False)
    result["cache_dir"] = str(root / "cache")
    return result


def saved_activation_bytes(model, x, recompute=False):
    """Bytes of the distinct non-parameter storages autograd keeps for backward in one forward of model(x),
    exact on any device. recompute=True counts recompute mode's recipes as what they keep (nothing new).
    The RNG is seeded first, so dropout draws the same masks (and so the same running statistics) for every
    model compared."""
    from swishkernels import batchnorm

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor):
        packed = batchnorm.pack_saved_tensor(tensor) if recompute else tensor
        if isinstance(packed, torch.Tensor) and packed.untyped_storage().data_ptr() not in params:
            storages[packed.untyped_storage().data_ptr()] = packed.untyped_storage().nbytes()
        return packed

    unpack = batchnorm.unpack_saved_tensor if recompute else (lambda t: t)
    torch.manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = model(x)  # kept alive until counted: no storage is freed and its address reused meanwhile
    total = sum(storages.values())
    del out
    return total
