"""The one prepared script for a lent GPU (ARCHITECTURE.md, "Measuring"): everything worth knowing in <= 5 minutes.

    python benchmarks/gpu_check.py                 # on the GPU machine; writes to $OUT (or --out)
    python benchmarks/gpu_check.py --dry-run --out /tmp/gc   # on a CPU: every step at toy size, < 2 minutes

Steps, each timed and isolated (a failing step is recorded, the next one runs):
  env        card, driver, CUDA, torch, triton, nvcc, ninja
  build      the extension for sm_90 (`setup.py build_ext --inplace`, TORCH_CUDA_ARCH_LIST=9.0; nothing is
             downloaded); dry run: only whether swishkernels._C loads
  pytest_gpu `pytest -m gpu tests` in a subprocess, its summary line kept (on a CPU they skip)
  kernels    forward/backward/forward+backward of our backends and the peers, fp32/bf16/fp16, 256 MiB per
             tensor, triton do_bench medians, with the copy ceiling measured in the same run
  memory     saved-for-backward MB and peak step memory, Conv-BN-Act stack and yolov3 (benchmarks/memory.py)
  training   yolov3 at batch 64 / 320 px on random data with the trainer's AMP and SGD: ms per iteration and
             peak memory for leaky, our swish (each GPU backend), swish-me, silu and naive swish
  graph      a fused Conv-BatchNormSwish2d training step (forward, backward, SGD) captured in one CUDA graph
             after an eager step run under torch.cuda.set_sync_debug_mode("error") (no host syncs in our
             ops); replay vs eager ms per step, and whether replay gives the eager step's numbers. Dry run:
             the eager step only (graphs need CUDA)
  sync_bn    SyncBatchNormSwish2d's synchronized path forced on one process under NCCL (world size 1; gloo in a
             dry run): nn.BatchNorm2d + SiLU's numbers on every backend, ms per step beside BatchNormSwish2d
  ncu        where Nsight Compute's `ncu` is on PATH: achieved DRAM throughput (% of peak, GB/s) of our Triton
             Swish forward and fused BatchNorm+Swish forward on 256 MiB tensors; else recorded as absent
  compile_step  the end-to-end training step of benchmarks/compile_step.py on yolov3-tiny, batch 32 at 320 px:
             eager SiLU, fused, fused + recompute, LeakyReLU(inplace), torch.compile, torch.compile + ours;
             step time, memory kept for backward and peak. Dry run: the eager variants at toy size
Results: gpu_check.json (machine, every step's status, seconds and data) and gpu_check.md, rewritten after
every step so a run cut short still leaves what it measured. Imports only torch, triton, numpy, pytest,
matplotlib and this checkout (no pycocotools, no yaml needed), and swishkernels only after the build step.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, sys.path[0] is benchmarks/: also import from the checkout
    sys.path.insert(1, str(ROOT))

import machine  # noqa: E402
import torch  # noqa: E402

# (step, seconds it is planned to take). Time a step leaves unused flows to the later ones; a step never
# starts with less than its later steps' plans would need, so the whole stays within --budget.
PLAN = (("env", 10), ("build", 120), ("pytest_gpu", 45), ("kernels", 50), ("memory", 20), ("training", 30),
        ("graph", 10), ("sync_bn", 10), ("ncu", 15), ("compile_step", 90))
TRAIN_PEERS = ("swish-me", "silu", "swish-naive")  # compared with leaky and our swish in the training step


class Settings:
    """Sizes of every step: the real ones on the GPU, toy ones for --dry-run on a CPU."""

    def __init__(self, dry_run):
        self.dry_run = dry_run
        self.device = "cpu" if dry_run else "cuda"
        self.kernel_sizes = "tiny" if dry_run else "quick"          # 256 MiB per tensor on the GPU
        self.kernel_budget_s = 0.01 if dry_run else 0.1              # do_bench repetition time
        self.kernel_exclude = ["compile"] if dry_run else []         # inductor on a CPU costs ~15 s per shape
        self.memory = (dict(batch=1, img_size=64, cfg="yolov3-tiny", stack_size=16, compiled=False) if dry_run
                       else dict(batch=16, img_size=320, cfg="yolov3", stack_size=64, compiled=True))
        self.train = (dict(cfg="yolov3-tiny", batch=1, img_size=64, warmup=1, iters=1, amp=False) if dry_run
                      else dict(cfg="yolov3", batch=64, img_size=320, warmup=3, iters=10, amp=True))
        # compile_step: eager only in a dry run (Inductor on a CPU costs a minute a model)
        self.compile_step = (dict(batch=2, img_size=64, rounds=1, variants=["fused", "LeakyReLU(inplace)"])
                             if dry_run else dict(batch=32, img_size=320, rounds=5, variants=None))


# ---- the steps ----------------------------------------------------------------------------------------------

def _run(cmd, timeout, env=None, cwd=ROOT):
    """A subprocess with a timeout: (return code or 'timeout', last 3000 characters of its output)."""
    try:
        p = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                           timeout=max(timeout, 1))
        return p.returncode, (p.stdout + p.stderr)[-3000:]
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        return "timeout", (out.decode(errors="replace") if isinstance(out, bytes) else str(out))[-3000:]
    except OSError as e:
        return "not run", str(e)


def step_env(s, seconds):
    info = machine.describe(s.device)
    info["nvcc"] = _run(["nvcc", "--version"], 10)[1].strip().splitlines()[-1:] or None
    info["ninja"] = _run(["ninja", "--version"], 10)[1].strip() or None
    info["nvidia_smi"] = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                               "--format=csv,noheader"], 10)[1].strip()
    return info


def _extension_status():
    """What a fresh process sees of the extension (this process must not import swishkernels early)."""
    code = ("import json, swishkernels as sk, swishkernels.backends as b; "
            "print(json.dumps({'extension_error': b.EXTENSION_ERROR, 'has_cuda_kernels': b.extension_has_cuda(), "
            "'cuda_backends': sk.available_backends('cuda'), 'cpu_backends': sk.available_backends('cpu')}))")
    rc, out = _run([sys.executable, "-c", code], 120)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"status_error": out[-1000:]}


def step_build(s, seconds):
    if s.dry_run:
        return {"rebuilt": False, **_extension_status()}
    env = {"TORCH_CUDA_ARCH_LIST": "9.0", "MAX_JOBS": str(os.cpu_count() or 8)}
    rc, tail = _run([sys.executable, "setup.py", "build_ext", "--inplace"], seconds, env=env)
    status = _extension_status()
    if rc != 0:
        raise RuntimeError(f"build_ext returned {rc}: {tail[-1500:]} | after it: {status}")
    return {"rebuilt": True, "returncode": rc, "output_tail": tail[-1500:], **status}


def step_pytest(s, seconds):
    rc, tail = _run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests", "-p", "no:cacheprovider"], seconds)
    lines = [line for line in tail.strip().splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    result = {"returncode": rc, "summary": summary, "output_tail": tail[-2000:]}
    if rc not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest -m gpu: {summary} (exit {rc})")
    return result


def step_kernels(s, seconds):
    os.environ["SWISHKERNELS_BENCH_EXCLUDE"] = ",".join(s.kernel_exclude)
    import kernel_suite  # imports swishkernels: only now, after the build

    torch.set_flush_denormal(True)  # the repeated in-place LeakyReLU must not decay into denormals
    deadline = time.time() + seconds
    # torch.compile cases last: compiling costs seconds per dtype, so if time runs out it is they that go.
    cases = sorted(kernel_suite.cases(s.device, profile=s.kernel_sizes),
                   key=lambda c: c.impl.startswith("torch.compile"))
    skipped, failed = [], []
    for case in cases:
        if time.time() > deadline:
            skipped.append(str(case))
            continue
        try:
            kernel_suite.run_case(case, s.kernel_budget_s)
        except Exception as e:  # one broken peer must not hide the others
            failed.append({"case": str(case), "error": f"{type(e).__name__}: {str(e)[:300]}"})
        if s.device == "cuda":
            torch.cuda.empty_cache()
    result = {"rows": kernel_suite.RESULTS, "failed": failed, "skipped_out_of_time": skipped,
              "table": kernel_suite.format_table()}
    if failed and len(failed) == len(cases) - len(skipped):
        raise RuntimeError(f"every kernel case failed, e.g. {failed[0]}")
    return result


def step_memory(s, seconds):
    import memory

    result = memory.run(s.device, amp=False, deadline=time.time() + seconds, **s.memory)
    return {"config": result["config"], "table": memory.format_all(result),
            **{k: [asdict(r) for r in result[k]] for k in ("stack", "darknet")}}


def _random_targets(batch, num_classes, per_image=4, seed=0):
    """(n, 6) rows [image, class, x, y, w, h] (normalised): what the loss needs, without a dataset."""
    g = torch.Generator().manual_seed(seed)
    n = batch * per_image
    image = torch.arange(batch).repeat_interleave(per_image).float()
    cls = torch.randint(0, num_classes, (n,), generator=g).float()
    wh = 0.05 + 0.4 * torch.rand(n, 2, generator=g)
    xy = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=g)
    return torch.cat([image[:, None], cls[:, None], xy, wh], 1)


def _loss_fn():
    """yolo.loss (GIoU/BCE, as the trainer) if it imports here, else a stand-in with the same backward shape
    (yolo.hyp imports PyYAML, which a bare GPU image may lack)."""
    try:
        from yolo.loss import compute_loss
        return "yolo.loss.compute_loss", lambda outputs, targets, model: compute_loss(outputs, targets, model)[0]
    except ImportError as e:
        return (f"sum of squared head outputs (yolo.loss unavailable: {e})",
                lambda outputs, targets, model: sum(o.float().square().mean() for o in outputs))


def train_one(name, s, loss_fn, deadline):
    """ms per training iteration (median) and peak allocated memory of one activation."""
    import memory

    c = s.train
    dev = torch.device(s.device)
    torch.manual_seed(0)
    model = memory.darknet(c["cfg"], name, 80, dev).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.937, nesterov=True)
    scaler = torch.amp.GradScaler(dev.type, enabled=c["amp"] and dev.type == "cuda")
    x = torch.rand(c["batch"], 3, c["img_size"], c["img_size"], device=dev)
    targets = _random_targets(c["batch"], 80).to(dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.float16, enabled=c["amp"] and dev.type == "cuda"):
            outputs = model(x)
        loss = loss_fn([o.float() for o in outputs], targets, model)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(c["warmup"]):  # cuDNN autotuning, Triton compilation, optimizer state
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(c["iters"]):
        if times and time.time() > deadline:
            break
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    row = {"activation": name, "ms_per_iter": 1e3 * statistics.median(times), "iters": len(times),
           "loss": float(loss), "finite": bool(torch.isfinite(loss))}
    if dev.type == "cuda":
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def step_training(s, seconds):
    import peers

    deadline = time.time() + seconds
    # Our compiled backends; the PyTorch `reference` backend only where nothing else runs.
    ours = [b for b in peers.our_backends(s.device) if b != "reference"] or ["reference"]
    names = ["leaky"] + [f"swish[{b}]" for b in ours] + list(TRAIN_PEERS)
    torch.backends.cudnn.benchmark = True  # as the trainer does
    loss_name, loss_fn = _loss_fn()
    rows = []
    for name in names:
        if time.time() > deadline:
            rows.append({"activation": name, "error": "skipped: out of time"})
            continue
        try:
            rows.append(train_one(name, s, loss_fn, deadline))
        except Exception as e:
            rows.append({"activation": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        if s.device == "cuda":
            torch.cuda.empty_cache()
    return {"config": {**s.train, "device": s.device, "loss": loss_name}, "rows": rows,
            "table": format_training(rows, s)}


def _ratio(row, leaky, key):
    return f"{row[key] / leaky[key]:.2f}x" if leaky and row.get(key) is not None and leaky.get(key) else "-"


def format_training(rows, s):
    c = s.train
    leaky = next((r for r in rows if r["activation"] == "leaky" and "error" not in r), None)
    lines = [f"\n{c['cfg']} training step, batch {c['batch']} at {c['img_size']} px, "
             f"{'fp16 AMP' if c['amp'] and s.device == 'cuda' else 'fp32'}, random data, {s.device}\n",
             "| activation | ms / iteration | vs leaky | peak memory (MB) | vs leaky |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['activation']} | {r['error']} | | | |")
            continue
        mem = r.get("peak_mem_mb")
        lines.append(f"| {r['activation']} | {r['ms_per_iter']:.1f} | {_ratio(r, leaky, 'ms_per_iter')} | "
                     f"{f'{mem:.0f}' if mem is not None else '-'} | {_ratio(r, leaky, 'peak_mem_mb')} |")
    return "\n".join(lines)


def _fused_stack(backend, device, channels=64, blocks=4):
    import torch.nn as nn

    import swishkernels as sk
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
    for _ in range(blocks):
        layers += [sk.BatchNormSwish2d(channels, backend=backend),
                   nn.Conv2d(channels, channels, 3, padding=1, bias=False)]
    return nn.Sequential(*layers).to(device)


def step_graph(s, seconds):
    """One fused training step captured in a CUDA graph (PyTorch's whole-network capture recipe)."""
    import swishkernels as sk
    dev = torch.device(s.device)
    backend = "triton" if dev.type == "cuda" else sk.available_backends("cpu")[-1]
    model = _fused_stack(backend, dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    size = (2, 3, 16, 16) if s.dry_run else (32, 3, 104, 104)
    static_x = torch.randn(size, device=dev)

    def step():
        loss = model(static_x).square().mean()
        loss.backward()
        optimizer.step()
        return loss

    if dev.type != "cuda":
        optimizer.zero_grad(set_to_none=True)
        return {"backend": backend, "captured": False, "eager_loss": float(step()),
                "note": "CUDA graphs need a GPU: the eager step ran"}
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream: Triton compiles, optimizer state is made
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.set_sync_debug_mode("error")  # any host sync in the step raises
    try:
        optimizer.zero_grad(set_to_none=True)
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()}
                 for st in optimizer.state.values()]
    optimizer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()
    # Replay from the same starting point as an eager step and compare.
    model.load_state_dict(state)
    for st, saved in zip(optimizer.state.values(), opt_state):
        for k, v in saved.items():
            if torch.is_tensor(v):
                st[k].copy_(v)
    graph.replay()
    torch.cuda.synchronize()
    replayed = {k: v.clone() for k, v in model.state_dict().items()}
    replay_loss = float(static_loss)
    model.load_state_dict(state)
    for st, saved in zip(optimizer.state.values(), opt_state):
        for k, v in saved.items():
            if torch.is_tensor(v):
                st[k].copy_(v)
    for p in model.parameters():
        p.grad = None
    eager_loss = float(step())
    eager = model.state_dict()
    max_diff = max(float((replayed[k].double() - eager[k].double()).abs().max()) for k in eager)

    def ms(fn, n=20):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return 1e3 * (time.perf_counter() - t0) / n

    def eager_step():
        optimizer.zero_grad(set_to_none=True)
        step()

    return {"backend": backend, "captured": True, "no_host_syncs": True, "input": list(size),
            "replay_loss": replay_loss, "eager_loss": eager_loss, "max_abs_state_diff": max_diff,
            "replay_ms": ms(graph.replay), "eager_ms": ms(eager_step)}


def step_sync_bn(s, seconds):
    """SyncBatchNormSwish2d's synchronized path, forced on one process (world size 1) so its collectives run under
    NCCL (gloo in a dry run): it must give nn.BatchNorm2d + SiLU's numbers on every backend; ms per forward +
    backward beside BatchNormSwish2d (the same kernels without the two collectives and the gather's combine)."""
    import datetime
    import socket

    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F

    import swishkernels as sk
    from swishkernels import bn_swish_ops
    dev = torch.device(s.device)
    collective = "nccl" if dev.type == "cuda" else "gloo"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group(collective, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))  # NCCL takes the device from the tensors
    size = (4, 8, 6, 6) if s.dry_run else (32, 64, 104, 104)
    rows = []
    try:
        for backend in [b for b in sk.available_backends(dev.type) if b in bn_swish_ops._OPS]:
            torch.manual_seed(0)
            reference = nn.BatchNorm2d(size[1]).to(dev)
            with torch.no_grad():
                reference.weight.uniform_(0.5, 1.5)
                reference.bias.uniform_(-1, 1)
            synced = sk.SyncBatchNormSwish2d(size[1], backend=backend).to(dev)
            synced.load_state_dict(reference.state_dict())
            synced.sync_group = lambda: dist.group.WORLD  # world size 1 would otherwise skip the collectives
            fused = sk.BatchNormSwish2d(size[1], backend=backend).to(dev)
            x, dy = torch.randn(size, device=dev) * 2 + 1, torch.randn(size, device=dev)
            x_ref, x_sync = x.clone().requires_grad_(), x.clone().requires_grad_()
            y_ref = F.silu(reference(x_ref))
            y_ref.backward(dy)
            y = synced(x_sync)
            y.backward(dy)
            got = [y, x_sync.grad, synced.weight.grad, synced.bias.grad, synced.running_mean, synced.running_var]
            want = [y_ref, x_ref.grad, reference.weight.grad, reference.bias.grad, reference.running_mean,
                    reference.running_var]
            errors = [float((a.detach().double() - b.detach().double()).abs().max()) for a, b in zip(got, want)]
            torch.testing.assert_close(got, want)  # fp32 defaults; a mismatch makes this step an error

            def ms(module, x=x, dy=dy, n=1 if s.dry_run else 20):
                xs = x.clone().requires_grad_()
                module(xs).backward(dy)  # warm-up (Triton compiles)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(n):
                    module(xs).backward(dy)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                return 1e3 * (time.perf_counter() - t0) / n

            rows.append({"backend": backend, "max_abs_error": dict(zip(
                ["y", "grad_x", "grad_weight", "grad_bias", "running_mean", "running_var"], errors)),
                "sync_ms": ms(synced), "fused_ms": ms(fused)})
    finally:
        dist.destroy_process_group()
    table = ["| backend | max abs error y / grad_x / running_var | sync ms | fused ms |", "|---|---|---:|---:|"]
    table += [f"| {r['backend']} | {r['max_abs_error']['y']:.1e} / {r['max_abs_error']['grad_x']:.1e} / "
              f"{r['max_abs_error']['running_var']:.1e} | {r['sync_ms']:.3f} | {r['fused_ms']:.3f} |" for r in rows]
    return {"collective": collective, "world_size": 1, "input": list(size), "rows": rows, "table": "\n".join(table)}


NCU_SCRIPT = """
import torch, swishkernels as sk
x = torch.randn(64 * 2**20, device="cuda")  # 256 MiB
sk.swish(x, backend="triton")
bn = sk.BatchNormSwish2d(64, backend="triton").cuda().eval()
bn(torch.randn(64, 64, 128, 128, device="cuda"))
torch.cuda.synchronize()
"""
NCU_METRICS = "dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes.sum.per_second,gpu__time_duration.sum"


def step_ncu(s, seconds):
    import shutil
    ncu = shutil.which("ncu")
    if ncu is None or s.dry_run:
        return {"available": False, "note": "ncu not on PATH" if ncu is None else "dry run"}
    rc, out = _run([ncu, "--csv", "--metrics", NCU_METRICS, "--kernel-name",
                    "regex:^(swish_forward_kernel|bn_swish_forward_kernel)$", sys.executable, "-c", NCU_SCRIPT],
                   seconds)
    rows = []
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split('","')]
        if len(cells) > 3 and cells[-3] in NCU_METRICS.split(","):
            rows.append({"kernel": next((c for c in cells if c.endswith("_kernel")), cells[4]),
                         "metric": cells[-3], "unit": cells[-2], "value": cells[-1]})
    return {"available": True, "returncode": rc, "rows": rows, "output_tail": out[-1500:]}


def step_compile_step(s, seconds):
    """The end-to-end training step of benchmarks/compile_step.py: eager SiLU, fused, fused + recompute, in-place
    LeakyReLU, torch.compile and torch.compile + ours, step time and memory kept for backward (and peak on the
    GPU). yolov3-tiny always (bundled); yolov8n where ultralytics is installed (not in the GPU image)."""
    import importlib.util

    import compile_step

    c = s.compile_step
    models = ["yolov3-tiny"] + (["yolov8n"] if not s.dry_run and importlib.util.find_spec("ultralytics") else [])
    wanted = c["variants"] or compile_step.VARIANTS
    results = compile_step.run(models, c["batch"], c["img_size"], c["rounds"], s.device, wanted=wanted)
    args = argparse.Namespace(batch=c["batch"], img_size=c["img_size"], rounds=c["rounds"])
    table = compile_step.markdown(results, args, machine.one_line(machine.describe(s.device)))
    return {"config": {**c, "device": s.device, "models": models}, "results": results, "table": table}


STEPS = {"env": step_env, "build": step_build, "pytest_gpu": step_pytest, "kernels": step_kernels,
         "memory": step_memory, "training": step_training, "graph": step_graph,
         "sync_bn": step_sync_bn, "ncu": step_ncu, "compile_step": step_compile_step}


# ---- running and reporting ----------------------------------------------------------------------------------

def write_report(report, out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(report))


def markdown(report):
    env = report["steps"].get("env", {}).get("data") or {}
    lines = [f"# gpu_check{' (dry run)' if report['dry_run'] else ''}", "",
             f"Machine: {machine.one_line(env) if env.get('torch') else 'unknown'}. "
             f"Started {report['started']}, {report.get('seconds', 0):.0f} s in all.", "",
             "| step | status | seconds | note |", "|---|---|---:|---|"]
    for name, st in report["steps"].items():
        note = (st.get("error") or "").replace("\n", " ").replace("|", "/")[:160]
        if name == "pytest_gpu" and st.get("data"):
            note = st["data"]["summary"]
        if name == "build" and st.get("data"):
            data = st["data"]
            note = f"cuda backends: {data.get('cuda_backends')}, extension error: {data.get('extension_error')}"
        lines.append(f"| {name} | {st['status']} | {st['seconds']:.1f} | {note} |")
    for name in ("kernels", "memory", "training", "sync_bn", "compile_step"):
        data = report["steps"].get(name, {}).get("data")
        if data and data.get("table"):
            lines += ["", f"## {name}", data["table"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_check",
                   help="output folder [$OUT, else runs/gpu_check]")
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, no rebuild: check the script itself")
    p.add_argument("--budget", type=float, default=300, help="seconds for everything [300]")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma list of steps to run [{','.join(STEPS)}]")
    a = p.parse_args(argv)
    if not a.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device here; use --dry-run to check the script on a CPU")
    s = Settings(a.dry_run)
    if a.dry_run:  # toy sizes on a shared CPU: a second thread would mostly wait for the scheduler
        torch.set_num_threads(1)
    wanted = [name for name in a.steps.split(",") if name]
    unknown = [name for name in wanted if name not in STEPS]
    if unknown:
        p.error(f"unknown step(s) {unknown}; steps: {', '.join(STEPS)}")
    out = Path(a.out)
    t_start = time.time()
    deadline = t_start + a.budget
    report = {"dry_run": a.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": a.budget, "steps": {}}
    plan = [(name, planned) for name, planned in PLAN if name in wanted]
    for i, (name, _) in enumerate(plan):
        later = sum(planned for _, planned in plan[i + 1:])
        allowance = max(deadline - time.time() - later, 5.0)
        print(f"[gpu_check] {name} (up to {allowance:.0f} s)...", flush=True)
        t0 = time.time()
        entry = {"status": "ok", "allowance_s": allowance}
        try:
            entry["data"] = STEPS[name](s, allowance)
        except Exception as e:
            entry.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
        entry["seconds"] = time.time() - t0
        report["steps"][name] = entry
        report["seconds"] = time.time() - t_start
        write_report(report, out)
        print(f"[gpu_check] {name}: {entry['status']} in {entry['seconds']:.1f} s"
              + (f" ({entry['error'][:200]})" if entry["status"] != "ok" else ""), flush=True)
    print(markdown(report))
    print(f"[gpu_check] wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {time.time() - t_start:.0f} s")
    return 0 if all(st["status"] == "ok" for st in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
