"""Timers: median seconds per call of a no-argument function, with warm-up first.

GPU: `triton.testing.do_bench` (CUDA events, median). It flushes the L2 cache before every timed call, so
with tensors of >= 256 MB no timed call finds its input in cache.
CPU: a perf_counter loop; the first call is a warm-up (allocation, torch.compile), then rounds of enough
iterations to last ~1 ms each, until `budget_s` is spent (at least 3 rounds).
"""
import ctypes
import math
import statistics
import time

import torch

MIN_ROUND_S = 1e-3  # a CPU round shorter than this is dominated by timer noise
MIN_ROUNDS, MAX_ROUNDS = 3, 200


def keep_freed_memory_mapped():
    """Make glibc keep freed blocks up to 1 GiB in the heap instead of returning them to the OS.

    By default every buffer over 32 MiB is a fresh mmap, so each out-of-place call on a 64 MiB tensor
    first page-faults and zeroes its whole output (more time in the kernel than in the activation), while
    in-place ops and the copy into a preallocated buffer do not: the comparison would measure the OS.
    A training loop that reuses buffers of the same sizes mostly avoids this too. No-op where not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 2**30) and libc.mallopt(M_TRIM_THRESHOLD, 2**30))


def alternating_times(fns, repeats, seconds):
    """Wall times of each fn(), one list per fn, over at least `repeats` rounds and as many more as fit
    in `seconds` (small sizes need many tries to find their floor on a busy machine), after a warm-up
    call each. The fns take turns, so a burst of load from other processes hits all of them, and the
    order flips every round: whoever runs second inherits the first's freed output."""
    start = time.perf_counter()
    for fn in fns:
        fn()
    rounds = max(repeats, int(seconds / max(time.perf_counter() - start, 1e-9)))
    times = [[] for _ in fns]
    for round_ in range(rounds):
        order = range(len(fns)) if round_ % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            start = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - start)
    return times


def plan_rounds(fn, budget_s):
    """(iterations per round, rounds) that fill about `budget_s`, from one timed call (callers have
    already run fn once: kernel_suite checks every result before timing it)."""
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    iterations = max(1, math.ceil(MIN_ROUND_S / one))
    rounds = int(budget_s / (one * iterations))
    return iterations, min(max(rounds, MIN_ROUNDS), MAX_ROUNDS)


def time_cpu(fn, budget_s=0.3):
    fn()  # warm-up
    iterations, rounds = plan_rounds(fn, budget_s)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iterations):
            fn()
        times.append((time.perf_counter() - t0) / iterations)
    return statistics.median(times)


def time_cuda(fn, warmup_ms=25, rep_ms=100):
    from triton.testing import do_bench

    try:
        ms = do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")
    except TypeError:  # older Triton: no return_mode
        ms = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5])
        ms = ms[0] if isinstance(ms, (list, tuple)) else ms
    return float(ms) / 1e3


def measure(fn, device, budget_s=0.3):
    """Median seconds per call of `fn` on `device` (a torch.device or string)."""
    if torch.device(device).type == "cuda":
        # do_bench's own warm-up and repetition times; budget_s scales them for quick runs.
        rep_ms = max(10, int(budget_s * 1000))
        return time_cuda(fn, warmup_ms=max(5, rep_ms // 4), rep_ms=rep_ms)
    return time_cpu(fn, budget_s)
