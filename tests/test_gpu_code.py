"""The GPU code checked without a GPU: every kernel compiled by the real compilers for sm_80/sm_90 and read
as SASS (tools/gpu_code/, in a subprocess: the interpreter that conftest switches on cannot compile),
and the kernel launches of one fused BatchNorm+Swish layer counted on the CPU.

`make test` compiles the representative set (~100 builds, ~2 minutes on 2 cores); `make check-gpu-code-full`
compiles the whole matrix (every kernel x dtype x sm_80/sm_90 x case)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import swishkernels as sk
from helpers import randn
from tools import gpu_code

ROOT = Path(__file__).resolve().parents[1]
TRITON_KERNELS = {name for name in gpu_code.KERNELS}
CUDA_OPS = set(gpu_code._CUDA_OPS.values())


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_code") / "builds.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "tools.gpu_code", "--set", "representative", "--json", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text())


def _problems(builds, marker):
    return [f"{b['name']}: {p}" for b in builds for p in b["problems"] if marker in p]


def test_every_kernel_compiles_for_sm80_and_sm90(builds):
    built = {(b["source"], b["kernel"], b["arch"]) for b in builds}
    for arch in (80, 90):
        assert {k for s, k, a in built if s == "triton" and a == arch} == TRITON_KERNELS
    if gpu_code.nvcc() is None:
        pytest.skip("nvcc not found: the CUDA half of this test needs it")
    cuda = {(b["kernel"].split(":")[1], b["dtype"], b["case"]) for b in builds if b["source"] == "cuda"}
    assert cuda == {(op, d, c) for op in CUDA_OPS for d in gpu_code.DTYPES for c in ("aligned", "misaligned")}


def test_no_spills_or_local_memory(builds):
    assert not _problems(builds, "spills")


def test_registers_allow_resident_programs(builds):
    """>= 4 programs per SM for elementwise kernels, >= 2 for reductions (allowances in gpu_code.allowance)."""
    assert not _problems(builds, "resident programs")


def test_aligned_paths_move_128_bits(builds):
    assert not _problems(builds, "not 128-bit")
    assert not _problems(builds, "misaligned path stores")


def test_hot_loops_within_issue_budget(builds):
    """Half of the SASS instructions per element that issue allows at 90% of H200's bandwidth (derivation in
    tools/gpu_code/machine.py); the per-element counts are checked to exist, so a parse failure cannot pass."""
    assert not _problems(builds, "instructions per element")
    measured = [b for b in builds if b["family"] != "finish" and b["case"] != "misaligned"]
    assert measured and all(b["instructions_per_element"] > 0 and b["budget"] > 0 for b in measured)


def test_cuda_keeps_two_packs_in_flight(builds):
    assert not _problems(builds, "packs per input in flight")


def test_issue_budget_derivation():
    # 132 SMs * 1.98 GHz * 128 thread-instructions per clock / (0.9 * 4.8 TB/s / B): 7.74 * B, half asserted.
    assert gpu_code.max_instructions_per_element(4) == pytest.approx(30.97, abs=0.01)
    assert gpu_code.instruction_budget(2) == pytest.approx(7.74, abs=0.01)
    assert gpu_code.resident_programs(64, 8, 0, 90) == 4 and gpu_code.resident_programs(65, 8, 0, 90) == 3


SASS = """
//--------------------- .text.k --------------------------
.text.k:
        /*0000*/                   S2R R0, SR_TID.X ;
.L_x_0:
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/                   FADD R4, R4, R5 ;
        /*0030*/              @!P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0040*/                   LDG.E.U16 R4, desc[UR4][R2.64] ;
        /*0050*/                   STG.E.U16 desc[UR4][R2.64], R4 ;
        /*0060*/               @P1 BRA `(.L_x_1) ;
        /*0070*/                   EXIT ;
"""


def test_sass_reader_finds_the_hot_loop():
    sass = gpu_code.parse_sass(SASS)["k"]
    assert sass.loops() == [(0x10, 0x30), (0x40, 0x60)]
    kind, body = gpu_code.hot_path(sass)  # the loop moving the most bytes
    assert kind == "loop" and [op for _, op, _ in body] == ["LDG.E.128", "FADD", "BRA"]
    assert gpu_code.global_accesses(sass.between(0x40, 0x60)) == {"load": [16], "store": [16]}


# ---- launches of one fused layer, counted on the CPU -----------------------------------------------------------

# ATen ops that launch nothing on a GPU (allocation, views, metadata); any other leaf op is a kernel.
NO_KERNEL = {"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::view", "aten::as_strided",
             "aten::_reshape_alias", "aten::reshape", "aten::alias", "aten::detach", "aten::detach_",
             "aten::select", "aten::slice", "aten::unsqueeze", "aten::squeeze", "aten::expand", "aten::permute",
             "aten::t", "aten::transpose", "aten::contiguous", "aten::to", "aten::lift_fresh", "aten::_unsafe_view",
             "aten::resolve_conj", "aten::resolve_neg", "aten::result_type", "aten::is_same_size"}
HOST_SYNCS = {"aten::item", "aten::_local_scalar_dense"}


INTERPRETER = "triton interpreter"


def _inside_interpreter(event):
    while event is not None:
        if event.name == INTERPRETER:
            return True
        event = event.cpu_parent
    return False


def count_launches(fn):
    """(Triton launches, ATen kernel launches, host syncs) while fn runs: Triton kernels through the
    interpreter's launch, ATen ops through the dispatcher's RecordFunction (the profiler's leaf events)."""
    from triton.runtime.interpreter import InterpretedFunction
    triton_launches = []
    original = InterpretedFunction.run

    def run(self, *args, **kwargs):
        triton_launches.append(self.fn.__name__)
        with torch.profiler.record_function(INTERPRETER):  # its own tensor copies are not the layer's ops
            return original(self, *args, **kwargs)

    InterpretedFunction.run = run
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
    finally:
        InterpretedFunction.run = original
    leaves = [e.name for e in prof.events()
              if e.name.startswith("aten::") and not e.cpu_children and not _inside_interpreter(e)]
    aten = [n for n in leaves if n not in NO_KERNEL and n not in HOST_SYNCS]
    syncs = [n for n in leaves if n in HOST_SYNCS]
    return triton_launches, aten, syncs


LAUNCH_CASES = [(sk.BatchNormSwish2d, False, 0.1), (sk.BatchNormSwish2d, True, 0.1),
                (sk.BatchNormSwish2d, False, None), (sk.BatchNormSwish2d, True, None), (sk.BatchNormMish2d, False, 0.1)]


@pytest.mark.parametrize("module, channels_last, momentum", LAUNCH_CASES,
                         ids=[f"{m.__name__}-{'cl' if c else 'nchw'}-{m_}" for m, c, m_ in LAUNCH_CASES])
def test_fused_layer_launches(module, channels_last, momentum, gen):
    """Training: 3 launches forward, 3 backward (stats, finishing, forward; reduce, finishing, input
    gradient); eval: 2 forward. No ATen kernels around them and no host syncs (CUDA-graph capturable)."""
    layer = module(8, momentum=momentum, backend="triton")
    x = randn(2, 8, 5, 7, gen=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad = randn(2, 8, 5, 7, gen=gen)
    if channels_last:
        grad = grad.to(memory_format=torch.channels_last)
    layer(x).backward(grad)  # a first step settles lazy state
    x.grad = layer.weight.grad = layer.bias.grad = None  # as optimizer.zero_grad() leaves them
    out = {}
    triton_fwd, aten_fwd, syncs_fwd = count_launches(lambda: out.setdefault("y", layer(x)))
    triton_bwd, aten_bwd, syncs_bwd = count_launches(lambda: out["y"].backward(grad))
    assert (len(triton_fwd), aten_fwd, syncs_fwd) == (3, [], []), (triton_fwd, aten_fwd, syncs_fwd)
    assert (len(triton_bwd), aten_bwd, syncs_bwd) == (3, [], []), (triton_bwd, aten_bwd, syncs_bwd)
    layer.eval()
    with torch.no_grad():
        triton_eval, aten_eval, syncs_eval = count_launches(lambda: layer(x))
    assert (len(triton_eval), aten_eval, syncs_eval) == (2, [], [])
