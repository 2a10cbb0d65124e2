"""Kernel microbenchmarks (`make bench`): forward, backward and forward+backward of our backends and the
peers (peers.py) over dtypes and sizes, with the copy ceiling of each (dtype, size) timed first.

CPU: pytest-benchmark times the calls (rounds planned to ~SWISHKERNELS_BENCH_BUDGET_S seconds per case).
GPU: the figure reported is triton's do_bench median (CUDA events, L2 flushed between calls); pytest-benchmark
also times a few synchronised calls for its own table. Each row lands in `extra_info` and in the table
that conftest.py prints at the end.
"""
import os

import kernel_suite
import pytest
import timing
import torch

BUDGET_S = float(os.environ.get("SWISHKERNELS_BENCH_BUDGET_S", "0.25"))
CASES = kernel_suite.cases()


def _synchronized(fn):
    def run():
        fn()
        torch.cuda.synchronize()
    return run


def median_seconds(benchmark, fn, device):
    if benchmark.disabled:  # `--benchmark-disable` (smoke tests): one call, then a quick measurement
        benchmark(fn)
        return timing.measure(fn, device, budget_s=0.01)
    if torch.device(device).type == "cuda":
        seconds = timing.measure(fn, device, BUDGET_S)
        benchmark.pedantic(_synchronized(fn), rounds=5, warmup_rounds=1)
        return seconds
    iterations, rounds = timing.plan_rounds(fn, BUDGET_S)
    benchmark.pedantic(fn, iterations=iterations, rounds=rounds)
    return benchmark.stats.stats.median


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kernel(benchmark, case):
    try:
        fn = kernel_suite.prepare(case)
    except LookupError as e:
        pytest.skip(str(e))
    except Exception as e:  # torch.compile needs a working C++/Triton toolchain; the others must work
        if case.impl.startswith("torch.compile"):
            pytest.skip(f"torch.compile unavailable here: {type(e).__name__}: {str(e)[:200]}")
        raise
    benchmark.group = f"{case.device} {case.dtype} {case.numel} {case.mode}"
    row = kernel_suite.record(case, median_seconds(benchmark, fn, case.device), BUDGET_S)
    benchmark.extra_info.update(row)
