"""SyncBatchNormSwish2d against one process running nn.BatchNorm2d + nn.SiLU on the global batch (float64).

The multi-process checks start 2 and 3 processes (gloo, 127.0.0.1, a free port) that run this file as a
script, `python tests/test_sync_bn_swish.py RANK WORLD PORT`: each process runs every check of `worker` and
exits non-zero with its traceback on a failure. Each collective times out after COLLECTIVE_TIMEOUT_S and the
test kills all processes after PROCESS_TIMEOUT_S, so a hung collective fails the test instead of CI.
"""
import datetime
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import swishkernels as sk
from swishkernels import bn_swish_ops

COLLECTIVE_TIMEOUT_S = 60
PROCESS_TIMEOUT_S = 150
BATCH_PER_RANK = {2: [3, 1], 3: [2, 1, 4]}  # uneven, and a rank with a single sample
BN_BACKENDS = [b for b in sk.available_backends("cpu") if b in bn_swish_ops._OPS]
OPTIONS = [{}, {"momentum": None}, {"affine": False, "track_running_stats": False}]


# ---- shared by both sides --------------------------------------------------------------------------------

def reference_bn(channels, options, seed):
    """nn.BatchNorm2d in float64 with random affine parameters and running statistics."""
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(channels, **options).double()
    with torch.no_grad():
        if bn.affine:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
        if bn.track_running_stats:
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    return bn


def conv_bn_swish_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU(),
                         nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5), nn.SiLU(),
                         nn.Conv2d(5, 2, 1)).double()


def _buffers(module):
    return {k: v for k, v in module.state_dict().items() if k.endswith(("running_mean", "running_var", "tracked"))}


# ---- one process -----------------------------------------------------------------------------------------

# Every option on the C++ backend; the defaults on the others (the interpreted Triton kernels are slow on a CPU).
SINGLE_CASES = [("cpu", i) for i in range(len(OPTIONS))] + [(b, 0) for b in BN_BACKENDS if b != "cpu"]


@pytest.mark.parametrize("backend, option", SINGLE_CASES, ids=[f"{b}-{i}" for b, i in SINGLE_CASES])
def test_without_a_process_group_it_is_batchnorm_swish(backend, option, gen):
    """No process group, a group of one process, and eval mode: BatchNormSwish2d's numbers bit for bit."""
    options = OPTIONS[option]
    fused = sk.BatchNormSwish2d(6, **options, backend=backend).double()
    fused.load_state_dict(reference_bn(6, options, seed=1).state_dict())
    synced = sk.SyncBatchNormSwish2d(6, **options, backend=backend).double()
    synced.load_state_dict(fused.state_dict())
    port = _free_port()
    for group_of_one in (False, True):
        if group_of_one:
            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        try:
            for training in (True, False):
                x = torch.randn(4, 6, 5, 3, generator=gen, dtype=torch.float64)
                dy = torch.randn(4, 6, 5, 3, generator=gen, dtype=torch.float64)
                results = []
                for module in (fused, synced):
                    module.train(training)
                    xg = x.clone().requires_grad_()
                    y = module(xg)
                    y.backward(dy)
                    grads = [p.grad.clone() for p in module.parameters()]
                    module.zero_grad()
                    results.append([y, xg.grad, *grads, *_buffers(module).values()])
                for a, b in zip(*results):
                    assert torch.equal(a, b)
        finally:
            if group_of_one:
                dist.destroy_process_group()


@pytest.mark.parametrize("backend", BN_BACKENDS)
def test_synchronized_path_on_one_process_matches_batchnorm_silu(backend, gen):
    """The synchronized path itself (gather, combine, all_reduce) forced on a group of one process, every
    backend (Triton too: the multi-process checks below run the C++ and reference backends only, for time)."""
    port = _free_port()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        for options in OPTIONS[:2]:
            reference = reference_bn(6, options, seed=2)
            layer = sk.SyncBatchNormSwish2d(6, **options, backend=backend).double()
            layer.load_state_dict(reference.state_dict())
            layer.sync_group = lambda: dist.group.WORLD  # world size 1 would otherwise take BatchNormSwish2d's path
            for _ in range(2):
                x = torch.randn(3, 6, 4, 5, generator=gen, dtype=torch.float64) * 2 + 1
                dy = torch.randn(3, 6, 4, 5, generator=gen, dtype=torch.float64)
                x_ref, x_mine = x.clone().requires_grad_(), x.clone().requires_grad_()
                y_ref = F.silu(reference(x_ref))
                y_ref.backward(dy)
                y = layer(x_mine)
                y.backward(dy)
                torch.testing.assert_close(y, y_ref)
                torch.testing.assert_close(x_mine.grad, x_ref.grad)
                torch.testing.assert_close([p.grad for p in layer.parameters()],
                                           [p.grad for p in reference.parameters()])
                torch.testing.assert_close(_buffers(layer), _buffers(reference))
                layer.zero_grad(), reference.zero_grad()
    finally:
        dist.destroy_process_group()


def test_convert_and_revert_keep_parameters_buffers_and_keys():
    model = conv_bn_swish_model()
    model.append(nn.BatchNorm2d(2).double())  # a plain BatchNorm: becomes nn.SyncBatchNorm, as PyTorch converts it
    sk.fuse_bn_swish(model)
    tensors = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # built before: must still hold the model's Parameters
    fused_layers = [model[1], model[4]]

    assert sk.convert_sync_bn_swish(model) is model
    assert [type(model[i]) for i in (1, 4, 7)] == [sk.SyncBatchNormSwish2d, sk.SyncBatchNormSwish2d, nn.SyncBatchNorm]
    assert model[1] is fused_layers[0] and model[4] is fused_layers[1]  # converted in place
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(tensors) and all(after[k] is tensors[k] for k in tensors)
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in model.parameters()}

    assert sk.revert_sync_bn_swish(model) is model
    assert [type(model[i]) for i in (1, 4, 7)] == [sk.BatchNormSwish2d, sk.BatchNormSwish2d, nn.BatchNorm2d]
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(tensors) and all(after[k] is tensors[k] for k in tensors)
    assert sk.unfuse_bn_swish(model) == 2
    assert [type(m) for m in model[:3]] == [nn.Conv2d, nn.BatchNorm2d, nn.SiLU]


def test_mish_pairs_convert_fuse_and_revert(gen):
    """BatchNorm -> Mish: fused into BatchNormMish2d, synchronized into SyncBatchNormMish2d (and back), and an
    nn.SyncBatchNorm -> Mish pair fused straight into SyncBatchNormMish2d."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Mish(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU()).double()
    x = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    expected = model(x)
    assert len(sk.fuse_bn_swish(model, example_inputs=(x,)).fused) == 2
    sk.convert_sync_bn_swish(model)
    assert [type(model[1]), type(model[4])] == [sk.SyncBatchNormMish2d, sk.SyncBatchNormSwish2d]
    torch.testing.assert_close(model(x), expected)  # no process group: the fused layers' own math
    sk.revert_sync_bn_swish(model)
    assert [type(model[1]), type(model[4])] == [sk.BatchNormMish2d, sk.BatchNormSwish2d]
    assert sk.unfuse_bn_swish(model) == 2

    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    with sk.sync_bn_swish.local_statistics(synced):
        expected = synced(x)
    assert len(sk.fuse_bn_swish(synced, example_inputs=(x,)).fused) == 2
    assert [type(synced[1]), type(synced[4])] == [sk.SyncBatchNormMish2d, sk.SyncBatchNormSwish2d]
    torch.testing.assert_close(synced(x), expected)


def test_convert_and_revert_a_timm_model_with_unfused_norm_act_layers(gen):
    """tinynet_e (a small EfficientNet): 21 BatchNormAct2d with SiLU (fused) and 10 without an activation, which
    timm's own converter makes SyncBatchNormAct; reverting gives back timm's layers, the math unchanged."""
    import timm  # a test dependency (requirements-dev.txt): never skipped
    model = timm.create_model("tinynet_e", pretrained=False).double().eval()
    x = torch.randn(2, 3, 32, 32, generator=gen, dtype=torch.float64)
    expected, keys = model(x), list(model.state_dict())
    assert len(sk.fuse_bn_swish(model, example_inputs=(x,)).fused) == 21
    model = sk.convert_sync_bn_swish(model)
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert kinds == {"SyncBatchNormSwish2d", "SyncBatchNormAct"}
    torch.testing.assert_close(model(x), expected)
    assert list(model.state_dict()) == keys
    model = sk.revert_sync_bn_swish(model)
    assert sk.unfuse_bn_swish(model) == 21
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert kinds == {"BatchNormAct2d"} and list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), expected)


def test_convert_refuses_batchnorm_subclasses_it_does_not_know():
    class ScaledBatchNorm(nn.BatchNorm2d):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(ValueError, match="ScaledBatchNorm"):
        sk.convert_sync_bn_swish(nn.Sequential(nn.Conv2d(3, 4, 1), ScaledBatchNorm(4)))


def test_fuse_turns_syncbatchnorm_silu_pairs_into_the_synchronized_layer(gen):
    model = conv_bn_swish_model()
    reference = conv_bn_swish_model()
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    group = object()  # stands for a process group: it must be carried over
    model[4].process_group = group
    report = sk.fuse_bn_swish(model)
    assert list(report.fused) == ["1", "4"]
    assert type(model[1]) is sk.SyncBatchNormSwish2d and model[4].process_group is group
    x = torch.randn(4, 3, 6, 6, generator=gen, dtype=torch.float64)
    for training in (True, False):  # no process group: nn.SyncBatchNorm computes locally, so must we
        model.train(training), reference.train(training)
        torch.testing.assert_close(model(x), reference(x))
    assert sk.unfuse_bn_swish(model) == 2
    assert type(model[1]) is nn.SyncBatchNorm and type(model[2]) is nn.SiLU and model[4].process_group is group


# ---- several processes -----------------------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("world", [2, 3])
def test_processes_match_one_process_on_the_global_batch(world):
    port = _free_port()
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, __file__, str(rank), str(world), str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(world)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=PROCESS_TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"{world} processes did not finish within {PROCESS_TIMEOUT_S} s (a hung collective?)")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank} of {world}:\n{out[-4000:]}"
        assert "all checks passed" in out


class CollectiveCounter:
    """Counts the collectives sync_bn_swish issues (it calls them through torch.distributed)."""

    NAMES = ("all_gather", "all_gather_into_tensor", "all_reduce", "broadcast", "reduce_scatter_tensor")

    def __init__(self):
        self.calls = []
        for name in self.NAMES:
            original = getattr(dist, name)
            setattr(dist, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def counted(*args, **kwargs):
            self.calls.append(name)
            return original(*args, **kwargs)
        return counted

    def take(self):
        calls, self.calls = self.calls, []
        return calls


def _slices(world, rank, sizes=None):
    sizes = sizes or BATCH_PER_RANK[world]
    start = sum(sizes[:rank])
    return sum(sizes), slice(start, start + sizes[rank])


ACTIVATIONS = {"swish": (sk.SyncBatchNormSwish2d, F.silu), "mish": (sk.SyncBatchNormMish2d, F.mish)}


def check_layer(world, rank, backend, options, counter, seed, sizes=None, activation="swish"):
    total, mine = _slices(world, rank, sizes)
    layer_class, act = ACTIVATIONS[activation]
    reference = reference_bn(5, options, seed)
    layer = layer_class(5, **options, backend=backend).double()
    layer.load_state_dict(reference.state_dict())
    gen = torch.Generator().manual_seed(seed)  # the same global batch in every process
    for _ in range(2):  # two steps: running statistics accumulate (momentum=None: a cumulative average)
        x = torch.randn(total, 5, 3, 4, generator=gen, dtype=torch.float64) * 2 + 1
        dy = torch.randn(total, 5, 3, 4, generator=gen, dtype=torch.float64)
        x_ref = x.clone().requires_grad_()
        y_ref = act(reference(x_ref))
        y_ref.backward(dy)
        x_mine = x[mine].clone().requires_grad_()
        counter.take()
        y = layer(x_mine)
        assert counter.take() == ["all_gather"], "one collective forward"
        y.backward(dy[mine])
        assert counter.take() == ["all_reduce"], "one collective backward"
        torch.testing.assert_close(y, y_ref[mine])
        torch.testing.assert_close(x_mine.grad, x_ref.grad[mine])
        for p, p_ref in zip(layer.parameters(), reference.parameters()):
            dist.all_reduce(p.grad)  # what DDP does (it averages; here the sum over processes)
            torch.testing.assert_close(p.grad, p_ref.grad)
        torch.testing.assert_close(_buffers(layer), _buffers(reference))
        layer.zero_grad(), reference.zero_grad()

    layer.eval(), reference.eval()
    x = torch.randn(total, 5, 3, 4, generator=gen, dtype=torch.float64)
    counter.take()
    y = layer(x[mine])
    assert counter.take() == [], "eval mode issues no collective"
    # nn.SyncBatchNorm in eval mode: running statistics, or (without them) the local batch's, never synchronized
    torch.testing.assert_close(y, act(reference(x[mine])))


def check_saved_tensors(world, rank, counter):
    """The same saved tensors as BatchNormSwish2d (the input and per-channel statistics), and with
    recompute the next convolution keeps a recipe instead of the block's output."""
    x = torch.randn(BATCH_PER_RANK[world][rank], 5, 3, 4, dtype=torch.float64, requires_grad=True)
    saved = {}
    for cls in (sk.BatchNormSwish2d, sk.SyncBatchNormSwish2d):
        torch.manual_seed(0)
        block = nn.Sequential(cls(5, backend="cpu", recompute=True), nn.Conv2d(5, 5, 1)).double()
        saved[cls] = [sk.saved_for_backward(block, x, recompute=recompute) for recompute in (False, True)]
    assert saved[sk.BatchNormSwish2d] == saved[sk.SyncBatchNormSwish2d], saved
    assert saved[sk.SyncBatchNormSwish2d][1].bytes < saved[sk.SyncBatchNormSwish2d][0].bytes
    counter.take()


def train_steps(model, world, rank, steps=3, recompute=False, sizes=None):
    """SGD steps on the global batches' share of this process; returns the global losses."""
    total, mine = _slices(world, rank, sizes) if world else (sum(sizes or BATCH_PER_RANK[2]), slice(None))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(7)
    losses = []
    for _ in range(steps):
        x = torch.randn(total, 3, 6, 6, generator=gen, dtype=torch.float64)
        target = torch.randn(total, 2, 3, 3, generator=gen, dtype=torch.float64)
        with sk.recompute_bn_swish() if recompute else _no_context():
            out = model(x[mine])
        loss = (out - target[mine]).square().sum() / total
        # DDP averages gradients over processes: multiplied back, the step is the global batch's.
        (loss * max(world, 1)).backward()
        optimizer.step()
        optimizer.zero_grad()
        loss = loss.detach()
        if world:
            dist.all_reduce(loss)
        losses.append(loss)
    return losses


class _no_context:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def check_ddp_training(world, rank, counter):
    from torch.nn.parallel import DistributedDataParallel as DDP

    total = sum(BATCH_PER_RANK[world])
    reference = conv_bn_swish_model()
    ref_losses = train_steps(reference, 0, 0, sizes=[total])

    fused_then_converted = conv_bn_swish_model()
    sk.fuse_bn_swish(fused_then_converted, backend="cpu")
    sk.convert_sync_bn_swish(fused_then_converted)
    converted_then_fused = nn.SyncBatchNorm.convert_sync_batchnorm(conv_bn_swish_model())
    sk.fuse_bn_swish(converted_then_fused, backend="cpu")
    recomputed = conv_bn_swish_model()
    sk.fuse_bn_swish(recomputed, recompute=True, backend="cpu")
    sk.convert_sync_bn_swish(recomputed)
    runs = {}
    for name, model in [("fused", fused_then_converted), ("converted_then_fused", converted_then_fused),
                        ("recomputed", recomputed)]:
        assert [type(m) for m in model if isinstance(m, nn.BatchNorm2d)] == [sk.SyncBatchNormSwish2d] * 2, name
        runs[name] = train_steps(DDP(model), world, rank, recompute=name == "recomputed")
        torch.testing.assert_close(runs[name], ref_losses, msg=lambda m, name=name: f"{name} losses: {m}")
        torch.testing.assert_close(dict(model.named_parameters()), dict(reference.named_parameters()))
        torch.testing.assert_close(_buffers(model), _buffers(reference))
    assert all(torch.equal(a, b) for a, b in zip(runs["recomputed"], runs["fused"]))
    for p, q in zip(recomputed.parameters(), fused_then_converted.parameters()):
        assert torch.equal(p, q), "recompute is bit-identical to the fused run"
    counter.take()


def check_process_group_argument(world, rank, counter):
    """A layer given a subgroup of processes 0 and 1 synchronizes over those two only."""
    group = dist.new_group([0, 1])
    if rank > 1:
        return
    sizes = BATCH_PER_RANK[world][:2]
    total, mine = _slices(2, rank, sizes)
    reference = reference_bn(5, {}, seed=3)
    layer = sk.SyncBatchNormSwish2d(5, process_group=group, backend="cpu").double()
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(total, 5, 3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(layer(x[mine]), F.silu(reference(x))[mine])
    torch.testing.assert_close(_buffers(layer), _buffers(reference))
    counter.take()


def worker(rank, world, port):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        counter = CollectiveCounter()
        for options in OPTIONS:  # every option on the C++ backend, the defaults on the reference one
            check_layer(world, rank, "cpu", options, counter, seed=0)
        check_layer(world, rank, "reference", {}, counter, seed=1)
        check_layer(world, rank, "cpu", {}, counter, seed=3, activation="mish")
        check_layer(world, rank, "cpu", {}, counter, seed=2, sizes=[0] + BATCH_PER_RANK[world][1:])  # an empty batch
        check_saved_tensors(world, rank, counter)
        check_ddp_training(world, rank, counter)
        if world > 2:
            check_process_group_argument(world, rank, counter)
        dist.barrier()
        print("all checks passed", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    worker(*map(int, sys.argv[1:4]))
