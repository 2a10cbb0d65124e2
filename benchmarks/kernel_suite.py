"""The kernel benchmark cases, how each is set up and checked, its results and the printed table.

Shared by `test_kernels.py` (pytest-benchmark, `make bench`) and `gpu_check.py` (plain loop, JSON).
A case is (implementation, mode, dtype, numel); modes are fwd, bwd, fwdbwd (traffic.py) and copy, the
device-to-device `y.copy_(x)` ceiling measured for every (dtype, numel) in the same run.

Sizes are bytes per tensor (`SWISHKERNELS_BENCH_SIZES`): "tiny" (smoke tests), "quick" (gpu_check), "default",
or a comma list of element counts. CPU default: 256 KiB (inside L2) and 64 MiB (twice a 32 MiB L3, so copy
and in-place kernels alike stream from DRAM), which keeps `make bench` within minutes on 2 cores.
GPU: >= 256 MiB per tensor, far past any L2 (and do_bench flushes L2 between calls): 256 MiB and 1 GiB.
"""
import os
from dataclasses import asdict, dataclass
from typing import Dict, List

import peers
import timing
import torch
import traffic

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MiB = 2**20
KiB = 2**10
SIZE_BYTES = {
    "cpu": {"tiny": [16 * KiB], "quick": [256 * KiB], "default": [256 * KiB, 64 * MiB]},
    "cuda": {"tiny": [4 * MiB], "quick": [256 * MiB], "default": [256 * MiB, 1024 * MiB]},
}
# A benchmark of a wrong result is meaningless: every implementation is checked once before it is timed.
TOLERANCE = {torch.float32: (1e-4, 1e-5), torch.float16: (2e-2, 2e-2), torch.bfloat16: (4e-2, 4e-2)}


@dataclass(frozen=True)
class Case:
    impl: str
    activation: str
    mode: str
    dtype: str
    numel: int
    device: str

    def __str__(self):
        return f"{self.device}-{self.dtype}-{self.numel}-{self.mode}-{self.impl}"

    @property
    def element_size(self):
        return torch.empty((), dtype=DTYPES[self.dtype]).element_size()


def bench_device():
    return os.environ.get("SWISHKERNELS_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def bench_dtypes():
    names = os.environ.get("SWISHKERNELS_BENCH_DTYPES", ",".join(DTYPES)).split(",")
    unknown = [n for n in names if n not in DTYPES]
    if unknown:
        raise ValueError(f"SWISHKERNELS_BENCH_DTYPES: unknown {unknown}; use {', '.join(DTYPES)}")
    return names


def sizes(device, dtype, profile=None):
    """Element counts to time for `dtype` on `device` under a size profile (see the module docstring)."""
    profile = profile or os.environ.get("SWISHKERNELS_BENCH_SIZES", "default")
    table = SIZE_BYTES["cuda" if torch.device(device).type == "cuda" else "cpu"]
    if profile not in table:
        return [int(n) for n in profile.split(",")]
    element_size = torch.empty((), dtype=DTYPES[dtype]).element_size()
    return [nbytes // element_size for nbytes in table[profile]]


def cases(device=None, dtypes=None, profile=None, impls=None) -> List[Case]:
    """All cases, copy first in each (dtype, numel) group so its ceiling is measured before the others."""
    device = device or bench_device()
    impls = impls if impls is not None else peers.all_impls(device)
    out = []
    for dtype in dtypes or bench_dtypes():
        for numel in sizes(device, dtype, profile):
            out.append(Case("copy", "copy", "copy", dtype, numel, device))
            out += [Case(i.name, i.activation, mode, dtype, numel, device) for i in impls for mode in traffic.MODES]
    return out


# ---- setting a case up ------------------------------------------------------------------------------------

def make_input(case, seed=0):
    """Normal values spread over the interesting range of the activations (never zeros)."""
    gen = torch.Generator(device=case.device).manual_seed(seed)
    x = torch.randn(case.numel, generator=gen, device=case.device, dtype=torch.float32) * 3
    return x.to(DTYPES[case.dtype])


def find_impl(case):
    for impl in peers.all_impls(case.device):
        if impl.name == case.impl:
            return impl
    raise LookupError(f"{case.impl!r} is not available on {case.device}")


_CHECKED = set()


def check(impl, x, dy):
    """Compare forward and gradient with float64 math; raises AssertionError naming the implementation."""
    key = (impl.name, x.dtype, x.numel(), str(x.device))
    if key in _CHECKED:
        return
    x64 = x.detach().double().requires_grad_()
    ref = peers.REFERENCE_MATH[impl.activation](x64)
    (ref_grad,) = torch.autograd.grad(ref, x64, dy.double())
    xg = x.detach().clone().requires_grad_()
    y = impl.forward(xg)
    (grad,) = torch.autograd.grad(y, xg, dy)
    with torch.no_grad():
        y_nograd = impl.run_nograd(x.clone())
    rtol, atol = TOLERANCE[x.dtype]
    for what, got, want in (("forward", y, ref), ("forward (no grad)", y_nograd, ref), ("gradient", grad, ref_grad)):
        torch.testing.assert_close(got.detach().double(), want.detach(), rtol=rtol, atol=atol,
                                   msg=lambda m, w=what: f"{impl.name} {w} ({x.dtype}): {m}")
    _CHECKED.add(key)


def prepare(case):
    """A no-argument function running one call of `case`, after checking the implementation's results.
    Every case owns its tensors (the in-place forward overwrites its input)."""
    x = make_input(case)
    if case.mode == "copy":
        out = torch.empty_like(x).copy_(x)  # touched once, so no timed call pays its page faults
        return lambda: out.copy_(x)
    impl = find_impl(case)
    dy = make_input(case, seed=1)
    check(impl, x, dy)  # also the warm-up: allocations, Triton and torch.compile compilation
    if case.mode == "fwd":
        def run():
            with torch.no_grad():
                impl.run_nograd(x)
        return run
    xg = x.requires_grad_()
    if case.mode == "bwd":
        y = impl.forward(xg)  # the graph is built once; each call runs only the backward
        return lambda: torch.autograd.grad(y, xg, dy, retain_graph=True)
    return lambda: torch.autograd.grad(impl.forward(xg), xg, dy)  # fwdbwd


# ---- results ------------------------------------------------------------------------------------------------

RESULTS: List[Dict] = []  # one row per timed case, in order
_COPY_SECONDS: Dict[tuple, float] = {}


def copy_seconds(case, budget_s=0.3):
    """The copy ceiling for the case's (device, dtype, numel): from this run's copy case, else measured now."""
    key = (case.device, case.dtype, case.numel)
    if key not in _COPY_SECONDS:
        copy_case = Case("copy", "copy", "copy", case.dtype, case.numel, case.device)
        _COPY_SECONDS[key] = timing.measure(prepare(copy_case), case.device, budget_s)
    return _COPY_SECONDS[key]


def record(case, seconds, budget_s=0.3):
    """Store and return the result row of a timed case: time, achieved GB/s, and the copy ceiling."""
    if case.mode == "copy":
        _COPY_SECONDS[(case.device, case.dtype, case.numel)] = seconds
    mode = case.mode
    achieved = traffic.gbps(mode, case.numel, case.element_size, seconds)
    ceiling = traffic.gbps("copy", case.numel, case.element_size, copy_seconds(case, budget_s))
    row = dict(asdict(case), median_us=seconds * 1e6,
               traffic_bytes=traffic.traffic_bytes(mode, case.numel, case.element_size),
               gbps=achieved, copy_gbps=ceiling, fraction_of_copy=traffic.fraction_of_copy(achieved, ceiling))
    RESULTS.append(row)
    return row


def run_case(case, budget_s=0.3):
    """Time one case with the plain timers (gpu_check; pytest-benchmark does its own timing)."""
    fn = prepare(case)
    return record(case, timing.measure(fn, case.device, budget_s), budget_s)


# ---- the printed table --------------------------------------------------------------------------------------

MODE_TITLES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward+backward"}
NOTES = ("Cells: median time · GB/s of the minimum traffic (forward 2N, backward 3N, forward+backward 5N "
         "elements) · percent of the copy ceiling (y.copy_(x), 2N) measured in the same run.\n"
         "LeakyReLU runs in place for the forward (it then reads and writes one buffer, and can beat a copy "
         "into another); under autograd it runs out of place, the same kernels, since an in-place op needs "
         "a non-leaf input.")


def _cell(row):
    if row is None:
        return "-"
    return f"{row['median_us']:.4g} µs · {row['gbps']:.3g} GB/s ({100 * row['fraction_of_copy']:.0f}%)"


def format_table(rows=None):
    """Markdown: one table per (device, dtype, numel); rows = implementations, columns = modes.
    Each cell: median time · achieved GB/s (percent of the copy ceiling measured in the same run)."""
    rows = RESULTS if rows is None else rows
    groups = {}
    for row in rows:
        groups.setdefault((row["device"], row["dtype"], row["numel"]), []).append(row)
    out = [NOTES]
    for (device, dtype, numel), group in groups.items():
        element_size = group[0]["traffic_bytes"] // (traffic.TRAFFIC_ELEMENTS[group[0]["mode"]] * numel)
        copy = next((r for r in group if r["mode"] == "copy"), None)
        ceiling = (f"{copy['gbps']:.3g} GB/s ({copy['median_us']:.4g} µs)" if copy
                   else f"{group[0]['copy_gbps']:.3g} GB/s")
        out.append(f"\n{device} {dtype}, {numel:,} elements ({numel * element_size / MiB:.3g} MiB per tensor); "
                   f"copy ceiling {ceiling}\n")
        out.append("| implementation | " + " | ".join(MODE_TITLES.values()) + " |")
        out.append("|---|" + "---|" * len(MODE_TITLES))
        impls = list(dict.fromkeys(r["impl"] for r in group if r["mode"] != "copy"))
        for impl in impls:
            by_mode = {r["mode"]: r for r in group if r["impl"] == impl}
            out.append(f"| {impl} | " + " | ".join(_cell(by_mode.get(m)) for m in MODE_TITLES) + " |")
    return "\n".join(out)
