"""--sync-bn: the trainer under torchrun (2 processes, gloo, CPU) with fused, synchronized BatchNorm+Swish, and
the conversion it makes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import swishkernels as sk
from yolo.models import Darknet
from yolo.utils.checkpoint import load_checkpoint
from yolo.utils.distributed import DistInfo, sync_batch_norm

REPO = Path(__file__).resolve().parents[2]
TINY_DATA = "shapes:n_train=8,n_val=4,img_size=64"
TWO_PROCESSES = DistInfo(rank=0, local_rank=0, world_size=2)


def test_sync_bn_makes_every_fused_layer_synchronized():
    model = Darknet("yolov3-tiny", num_classes=3, activation="swish")
    keys = list(model.state_dict())
    assert sk.fuse_bn_swish(model).fused
    model = sync_batch_norm(model, TWO_PROCESSES, torch.device("cpu"))
    batch_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert batch_norms and all(type(m) is sk.SyncBatchNormSwish2d for m in batch_norms)
    assert list(model.state_dict()) == keys  # checkpoints load into unsynchronized models


def test_sync_bn_on_cpu_refuses_unfused_batchnorm():
    model = Darknet("yolov3-tiny", num_classes=3, activation="leaky")
    with pytest.raises(ValueError, match="--fuse-bn"):
        sync_batch_norm(model, TWO_PROCESSES, torch.device("cpu"))
    assert sync_batch_norm(model, DistInfo(), torch.device("cpu")) is model  # one process: nothing to synchronize


def test_torchrun_two_processes_sync_bn_fused_recompute(tmp_path):
    args = ["--data", TINY_DATA, "--cfg", "yolov3-tiny", "--img-size", "64", "--batch-size", "4", "--epochs", "1",
            "--device", "cpu", "--activation", "swish", "--fuse-bn-recompute", "--sync-bn",
            "--cache-dir", str(tmp_path / "cache"), "--project", str(tmp_path), "--name", "sync"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "yolo.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "BN fused + recompute, BN synchronized" in proc.stdout and "world size 2" in proc.stdout
    ckpt = load_checkpoint(tmp_path / "sync/weights/last.pt")
    assert ckpt["epoch"] == 0 and ckpt["opt"]["sync_bn"]
    unfused = Darknet("yolov3-tiny", num_classes=ckpt["nc"], activation="swish")
    unfused.load_state_dict(ckpt["model"])  # same keys as a plain model: loads for single-device use
    running = [v for k, v in ckpt["model"].items() if k.endswith("running_var")]
    assert running and all(torch.isfinite(v).all() and (v > 0).all() for v in running)


def test_experiment_rows_under_torchrun_train_over_both_processes(tmp_path):
    """yolo.experiment under torchrun: every row trains with DDP over the 2 processes (world size in each row's
    result), --sync-bn synchronizes the fused rows, and rank 0 alone writes one summary."""
    args = ["--variants", "swish-fused,swish-fused-recompute", "--data", TINY_DATA, "--img-size", "64",
            "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--sync-bn", "--threads", "1",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "yolo.experiment", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and summary[1].startswith("swish-fused,")
    for row in ("swish-fused", "swish-fused-recompute"):
        result = json.loads((tmp_path / "out" / row / "experiment.json").read_text())["result"]
        assert result["world_size"] == 2
        ckpt = load_checkpoint(tmp_path / "out" / row / "weights" / "last.pt")
        assert ckpt["opt"]["sync_bn"] and ckpt["epoch"] == 0
