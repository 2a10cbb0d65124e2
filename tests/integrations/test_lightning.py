"""PyTorch Lightning DDP with SyncBatchNorm: a fused model trained on 2 CPU processes with our LayerSync plugin
equals one process training nn.BatchNorm2d + nn.SiLU on the global batch (float64)."""
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from integrations import lightning_ddp  # the script both processes run

HERE = Path(__file__).resolve().parent


def reference_state():
    """One process, plain BatchNorm2d + SiLU, the global batch of each step (ranks take samples r, r+2, ...)."""
    model = lightning_ddp.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lightning_ddp.LR)
    x, y = lightning_ddp.data()
    global_batch = 2 * lightning_ddp.PER_RANK_BATCH
    for start in range(0, lightning_ddp.SAMPLES, global_batch):
        optimizer.zero_grad()
        F.mse_loss(model(x[start:start + global_batch]), y[start:start + global_batch]).backward()
        optimizer.step()
    return model.state_dict()


def test_lightning_ddp_with_sync_batchnorm_swish_matches_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PL_DISABLE_FORK": "1"}
    proc = subprocess.run([sys.executable, str(HERE / "lightning_ddp.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    expected = reference_state()
    for rank in (0, 1):
        saved = torch.load(tmp_path / f"rank{rank}.pt")
        assert saved["trained_with"] == ["SyncBatchNormSwish2d"]  # the plugin, not PyTorch's SyncBatchNorm
        assert list(saved["state"]) == list(expected)
        for key, value in expected.items():
            torch.testing.assert_close(saved["state"][key], value, rtol=1e-10, atol=1e-10, msg=key)
