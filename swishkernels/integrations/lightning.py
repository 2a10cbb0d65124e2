"""PyTorch Lightning: synchronized fused BatchNorm+Swish under `Trainer(strategy="ddp")`.

    from swishkernels.integrations.lightning import SyncBatchNormSwish
    sk.fuse_bn_swish(model)
    trainer = Trainer(strategy="ddp", plugins=[SyncBatchNormSwish()])   # instead of sync_batchnorm=True

Lightning's `sync_batchnorm=True` plugs in `TorchSyncBatchNorm`, which calls
`nn.SyncBatchNorm.convert_sync_batchnorm`: the model's math stays BatchNorm then Swish, but the fused layers
become PyTorch's SyncBatchNorm (three saved tensors per block again, and GPUs only). This LayerSync plugin makes
them `sk.SyncBatchNormSwish2d` instead (the memory saving kept, gloo on CPUs too) and turns other BatchNorms
into `nn.SyncBatchNorm` as Lightning's own would. Imported only by users who import it: the package never
imports Lightning.
"""
from typing import Any, Optional

import torch.nn as nn
from lightning.pytorch.plugins.layer_sync import LayerSync

from ..sync_bn_swish import convert_sync_bn_swish, revert_sync_bn_swish


class SyncBatchNormSwish(LayerSync):
    """Lightning LayerSync plugin: `Trainer(strategy="ddp", plugins=[SyncBatchNormSwish()])`."""

    def __init__(self, process_group: Optional[Any] = None):
        self.process_group = process_group

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_sync_bn_swish(model, self.process_group)

    def revert(self, model: nn.Module) -> nn.Module:
        return revert_sync_bn_swish(model)
