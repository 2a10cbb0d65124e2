"""Shared test setup. Triton kernels run under the interpreter on machines without a GPU; that switch
has to be made before swishkernels first imports its Triton kernels, hence here, at the very top."""
import os
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from helpers import CPU_BACKENDS  # noqa: E402


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
    generated 64-px images, CPU: a few seconds). Here rather than in tests/yolo/conftest.py: one shared
    fixture for both folders."""
    from yolo.train import run

    root = tmp_path_factory.mktemp("trained")
    result = run(data="shapes:n_train=8,n_val=4,img_size=64", cfg="yolov3-tiny", img_size=64, batch_size=4,
                 device="cpu", workers=0, seed=0, epochs=1, cache_dir=str(root / "cache"),
                 project=str(root / "runs"), verbose=False)
    result["cache_dir"] = str(root / "cache")
    return result
