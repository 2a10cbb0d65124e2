"""Setup for `make bench` (pytest-benchmark over benchmarks/): machine settings before anything is timed,
and the GB/s table printed at the end of the session.

Environment: SWISHKERNELS_BENCH_DEVICE (cuda if available, else cpu), SWISHKERNELS_BENCH_SIZES and
SWISHKERNELS_BENCH_DTYPES (kernel_suite.py), SWISHKERNELS_BENCH_THREADS (CPU threads, default 1),
SWISHKERNELS_BENCH_JSON (also write the rows and the machine there).
"""
import json
import os

import kernel_suite
import machine
import timing
import torch

# One thread by default: on a shared 2-core machine a second thread mostly waits for the scheduler, which
# turns microsecond kernels into 20 ms stalls; single-thread numbers are stable and comparable.
if kernel_suite.bench_device() == "cpu":
    torch.set_num_threads(int(os.environ.get("SWISHKERNELS_BENCH_THREADS", "1")))
    timing.keep_freed_memory_mapped()  # timing.py says why: time kernels, not page faults
# The in-place LeakyReLU forward runs on its own output over and over; without this its negative values
# decay into denormals, which CPUs process far more slowly than normal numbers.
torch.set_flush_denormal(True)


def pytest_terminal_summary(terminalreporter):
    if not kernel_suite.RESULTS:
        return
    info = machine.describe(kernel_suite.bench_device())
    terminalreporter.write_sep("=", "swishkernels: median time, GB/s of minimum traffic (% of copy)")
    terminalreporter.write_line(f"machine: {machine.one_line(info)}")
    terminalreporter.write_line(kernel_suite.format_table())
    path = os.environ.get("SWISHKERNELS_BENCH_JSON")
    if path:
        with open(path, "w") as f:
            json.dump({"machine": info, "rows": kernel_suite.RESULTS}, f, indent=1)
        terminalreporter.write_line(f"wrote {path}")
