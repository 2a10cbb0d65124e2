"""The benchmark entry points at toy size, so `make test` catches breakage without timing anything:
the pytest-benchmark suite (tiny sizes, benchmarks disabled), the GB/s arithmetic, the result check that
keeps a wrong kernel out of the tables, the memory accounting against hand-computed bytes, and
`gpu_check.py --dry-run`."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import kernel_suite  # noqa: E402
import memory  # noqa: E402
import peers  # noqa: E402
import traffic  # noqa: E402


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWISHKERNELS_BENCH")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), **extra)
    return env


# ---- kernel benchmarks -------------------------------------------------------------------------------------

def test_traffic_arithmetic():
    # forward of 1000 fp32 elements in 1 µs: 2 * 1000 * 4 bytes / 1e-6 s = 8 GB/s
    assert traffic.gbps("fwd", 1000, 4, 1e-6) == pytest.approx(8.0)
    assert traffic.gbps("bwd", 1000, 2, 1e-6) == pytest.approx(6.0)
    assert traffic.gbps("fwdbwd", 1000, 4, 2e-6) == pytest.approx(10.0)
    assert traffic.fraction_of_copy(5.0, 10.0) == pytest.approx(0.5)


def test_peers_named_and_triton_interpreter_left_out():
    names = [i.name for i in peers.all_impls("cpu")]
    for peer in ("naive x*sigmoid(x)", "seed MemoryEfficientSwish", "F.silu", "torch.compile(F.silu)",
                 "LeakyReLU(0.1, inplace)", "F.mish"):
        assert peer in names
    for backend in peers.our_backends("cpu"):
        assert f"sk.swish[{backend}]" in names and f"sk.mish[{backend}]" in names
    assert "triton" not in peers.our_backends("cpu")  # interpreted: far too slow to time


def test_check_rejects_a_wrong_kernel():
    x = kernel_suite.make_input(kernel_suite.Case("x", "swish", "fwd", "float32", 256, "cpu"))
    dy = torch.randn_like(x)
    kernel_suite.check(peers.Impl("right", "swish", F.silu), x, dy)
    wrong_forward = peers.Impl("wrong forward", "swish", lambda t: t * torch.sigmoid(1.01 * t))
    with pytest.raises(AssertionError, match="wrong forward"):
        kernel_suite.check(wrong_forward, x, dy)

    class BadGrad(torch.autograd.Function):  # right values, gradient of the naive formula's first term only
        @staticmethod
        def forward(ctx, t):
            ctx.save_for_backward(t)
            return F.silu(t)

        @staticmethod
        def backward(ctx, g):
            (t,) = ctx.saved_tensors
            return g * torch.sigmoid(t)

    with pytest.raises(AssertionError, match="gradient"):
        kernel_suite.check(peers.Impl("wrong gradient", "swish", BadGrad.apply), x, dy)


def test_kernel_benchmarks_run_at_tiny_size(tmp_path):
    """`make bench` at tiny size: every peer and mode runs, lands in the table and in extra_info rows."""
    rows_json = tmp_path / "rows.json"
    env = _env(SWISHKERNELS_BENCH_SIZES="tiny", SWISHKERNELS_BENCH_DTYPES="float32,bfloat16",
               SWISHKERNELS_BENCH_EXCLUDE="compile", SWISHKERNELS_BENCH_JSON=str(rows_json))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "benchmarks", "--benchmark-disable",
                        "-p", "no:cacheprovider"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "copy ceiling" in p.stdout and "| sk.swish[" in p.stdout
    rows = json.loads(rows_json.read_text())["rows"]
    impls = [i for i in peers.all_impls("cpu") if "compile" not in i.name]
    expected = {(i.name, m, d) for i in impls for m in traffic.MODES for d in ("float32", "bfloat16")}
    expected |= {("copy", "copy", d) for d in ("float32", "bfloat16")}
    assert {(r["impl"], r["mode"], r["dtype"]) for r in rows} == expected
    for r in rows:
        assert r["median_us"] > 0 and r["gbps"] > 0 and r["copy_gbps"] > 0
        element_size = 4 if r["dtype"] == "float32" else 2
        assert r["traffic_bytes"] == traffic.TRAFFIC_ELEMENTS[r["mode"]] * r["numel"] * element_size


# ---- memory accounting -------------------------------------------------------------------------------------

def _saved_by_activation(name, n=1000):
    """What one activation saves, given a non-leaf input (as after a BatchNorm)."""
    leaf = torch.randn(n, requires_grad=True)
    act = memory.build_activation(name, 1)
    return memory.saved_for_backward(lambda: act(leaf * 2.0))  # mul by a Python number saves nothing


@pytest.mark.parametrize("backend", peers.our_backends("cpu"))
def test_ours_saves_exactly_its_input(backend):
    saved = _saved_by_activation(f"swish[{backend}]")
    assert (saved.tensors, saved.bytes) == (1, 4000)
    saved = _saved_by_activation(f"mish[{backend}]")
    assert (saved.tensors, saved.bytes) == (1, 4000)


def test_peers_save_what_the_seed_said():
    assert (_saved_by_activation("swish-me").tensors, _saved_by_activation("swish-me").bytes) == (1, 4000)
    naive = _saved_by_activation("swish-naive")
    assert (naive.tensors, naive.bytes) == (2, 8000)  # x and sigmoid(x)
    leaky = _saved_by_activation("leaky")
    assert (leaky.tensors, leaky.bytes) == (1, 4000)  # its own output, which overwrote the input


def test_storages_are_counted_once():
    x = torch.randn(10, 10, requires_grad=True)
    saved = memory.saved_for_backward(lambda: (x * x[0]).sum() + (x * x).sum())  # x saved 3 times, a view once
    assert (saved.tensors, saved.bytes) == (1, 400)


@pytest.mark.parametrize("name", ["leaky", "swish-me", "silu", "swish-naive", "swish-fused", "swish-fused-recompute"]
                         + [f"swish[{b}]" for b in peers.our_backends("cpu")])
def test_stack_bytes_match_the_hand_count(name):
    batch, channels, size, depth = 2, 8, 6, 3
    rows = memory.stack_table("cpu", batch, size, channels, depth, names=[name], compiled=False)
    assert rows[0].error is None
    assert rows[0].saved_mb * memory.MiB == memory.expected_stack_bytes(name, batch, channels, size, depth)


def test_darknet_bytes_extrapolate_exactly_and_order_as_expected():
    x = torch.rand(3, 3, 64, 64)
    direct = {}
    for name in ("leaky", "swish", "swish-naive"):
        model = memory.darknet("yolov3-tiny", name, 8)
        direct[name] = memory.saved_for_backward(model, x, exclude=model).bytes
        assert memory.darknet_saved("yolov3-tiny", 64, 3, name, 8).bytes == direct[name]
    assert direct["leaky"] < direct["swish"] < direct["swish-naive"]


def test_memory_cli_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "memory.json"
    assert memory.main(["--device", "cpu", "--batch", "1", "--img-size", "64", "--cfg", "yolov3-tiny",
                        "--stack-size", "8", "--no-compile", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| leaky | " in text and "vs leaky" in text
    blob = json.loads(out.read_text())
    names = memory.activation_names("cpu")
    for table in ("stack", "darknet"):
        assert [r["activation"] for r in blob[table]] == names
        assert all(r["error"] is None and r["saved_mb"] > 0 for r in blob[table])
    leaky = blob["darknet"][0]["saved_mb"]
    naive = next(r for r in blob["darknet"] if r["activation"] == "swish-naive")["saved_mb"]
    assert naive > leaky


# ---- the GPU check script ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gc"
    p = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--out", str(out)],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] is True
    assert list(report["steps"]) == ["env", "build", "pytest_gpu", "kernels", "memory", "training", "graph", "sync_bn",
                                   "ncu", "compile_step"]
    for name, step in report["steps"].items():
        assert step["status"] == "ok", (name, step.get("error"))
        assert step["seconds"] >= 0
    steps = report["steps"]
    assert steps["env"]["data"]["torch"] == torch.__version__
    assert "cpu_backends" in steps["build"]["data"]
    assert "skipped" in steps["pytest_gpu"]["data"]["summary"] or "deselected" in steps["pytest_gpu"]["data"]["summary"]
    assert steps["kernels"]["data"]["rows"] and not steps["kernels"]["data"]["failed"]
    assert all(r["error"] is None for r in steps["memory"]["data"]["darknet"])
    rows = steps["training"]["data"]["rows"]
    assert [r["activation"] for r in rows][0] == "leaky" and all("error" not in r for r in rows)
    assert all(r["finite"] and r["ms_per_iter"] > 0 for r in rows)
    graph = steps["graph"]["data"]  # on a CPU: the eager fused step only
    assert graph["captured"] is False and graph["eager_loss"] > 0
    assert steps["sync_bn"]["data"]["collective"] == "gloo" and steps["sync_bn"]["data"]["rows"]
    assert steps["ncu"]["data"]["available"] is False
    rows = steps["compile_step"]["data"]["results"]["yolov3-tiny"]  # eager variants only in a dry run
    assert list(rows) == ["eager SiLU", "fused", "LeakyReLU(inplace)"]
    assert rows["fused"]["kept_mib"] < rows["eager SiLU"]["kept_mib"] and rows["eager SiLU"]["time_ratio"] == 1
    md = (out / "gpu_check.md").read_text()
    assert "| kernels | ok |" in md and "## training" in md


# ---- the CPU speed script of the C++ kernels ---------------------------------------------------------------

@pytest.mark.skipif(not importlib.util.find_spec("swishkernels._C"), reason="needs the C++ extension")
def test_cpu_native_speed_prints_a_row_per_pass(tmp_path):
    p = subprocess.run([sys.executable, str(BENCH / "cpu_native_speed.py"), "--activations", "swish,mish",
                        "--dtypes", "float32", "--sizes", "64K", "--threads", "1", "--repeats", "2",
                        "--seconds", "0"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [line.split() for line in p.stdout.splitlines() if line.split()[:1] in (["swish"], ["mish"])]
    assert [(r[0], r[4]) for r in rows] == [("swish", "forward"), ("swish", "backward"),
                                            ("mish", "forward"), ("mish", "backward")]
    for row in rows:  # ATen ms, ours ms, ratio of bests, median ratio: all positive numbers
        assert all(float(v) > 0 for v in row[5:9]), row


# ---- the CPU BatchNorm+Swish speed script ------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(torch.ops.swishkernels, "bn_swish_stats"),
                    reason="swishkernels._C (the cpu backend) is not built")
def test_cpu_bn_swish_speed_runs_at_tiny_size():
    p = subprocess.run([sys.executable, str(BENCH / "cpu_bn_swish_speed.py"), "--shapes", "2x5x3x3",
                        "--threads", "1", "--repeats", "1", "--seconds", "0"],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [line.split() for line in p.stdout.splitlines() if line.split()[:1] in (["train"], ["eval"])]
    assert len(rows) == 2 * 2 * 2  # modes x layouts x dtypes
    assert {(r[0], r[2], r[3]) for r in rows} == {(m, layout, d) for m in ("train", "eval")
                                                   for layout in ("nchw", "channels_last")
                                                   for d in ("float32", "bfloat16")}


# ---- the per-call cost script --------------------------------------------------------------------------------

def test_per_call_cost_table_has_both_activations_and_module_ratios():
    import per_call_cost
    table = per_call_cost.paths()
    for name in ("F.silu", "nn.SiLU()", "sk.swish", "sk.Swish()", "F.mish", "nn.Mish()", "sk.mish", "sk.Mish()"):
        assert name in table, name
    assert per_call_cost.peers_of("sk.Mish()", table) == ("F.mish", "nn.Mish()")
    assert per_call_cost.peers_of("sk.swish", table) == ("F.silu",)
    counts = {name: 1000.0 for name in table}
    counts.update({"F.mish": 800.0, "nn.Mish()": 900.0, "sk.Mish()": 1080.0})
    wall = {name: (1.0, {peer: 1.0 for peer in per_call_cost.peers_of(name, table)}) for name in table}
    text = per_call_cost.markdown(64, {"no-grad forward": wall}, {"no-grad forward": counts})
    row = next(line for line in text.splitlines() if line.startswith("| sk.Mish() |"))
    assert row.split("|")[5:8] == [" 1,080 ", " 1.35 ", " 1.20 "]  # instructions, to F.mish, to nn.Mish()
