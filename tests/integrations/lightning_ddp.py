"""Run by tests/integrations/test_lightning.py: a fused Conv-BN-SiLU model trained by a Lightning Trainer with
strategy="ddp" on 2 CPU processes (gloo) and our LayerSync plugin. Lightning's launcher runs this file again for
rank 1. Each rank saves its final state_dict and the BatchNorm classes it trained with to OUT/rank<r>.pt.

    python lightning_ddp.py OUT
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer

import swishkernels as sk
from swishkernels.integrations.lightning import SyncBatchNormSwish

SAMPLES, PER_RANK_BATCH, LR = 8, 2, 0.1


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.SiLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).double()


def data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, 3, 6, 6, generator=generator, dtype=torch.float64) * 2 + 0.5
    return x, torch.randn(SAMPLES, 2, generator=generator, dtype=torch.float64)


class Module(LightningModule):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.trained_with = set()

    def training_step(self, batch, batch_idx):
        self.trained_with |= {type(m).__name__ for m in self.model.modules() if isinstance(m, nn.BatchNorm2d)}
        x, y = batch
        return F.mse_loss(self.model(x), y)

    def train_dataloader(self):
        # Rank r takes samples r, r + 2, ... in order (Lightning's own sampler would shuffle them), so step k's
        # global batch is samples 4k..4k+3: what the one-process reference trains on.
        dataset = torch.utils.data.TensorDataset(*data())
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=False)
        return torch.utils.data.DataLoader(dataset, batch_size=PER_RANK_BATCH, sampler=sampler)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def main(out: Path) -> None:
    model = build_model()
    assert len(sk.fuse_bn_swish(model, example_inputs=(data()[0][:2],)).fused) == 2
    module = Module(model)
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", plugins=[SyncBatchNormSwish()],
                      precision="64-true", max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(module)
    torch.save({"state": module.model.state_dict(), "trained_with": sorted(module.trained_with)},
               out / f"rank{trainer.global_rank}.pt")
    # Lightning leaves the gloo group up; torn down by interpreter exit, its threads sometimes abort the process
    # ("terminate called without an active exception", seen once in a CI run). Close it in order instead.
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
