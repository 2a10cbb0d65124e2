"""torchrun DDP plumbing. torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them we run one process
(rank -1, world size 1). Rank 0 (or -1) is the only process that logs, evaluates and writes files."""
import datetime
from dataclasses import dataclass

import torch.distributed as dist

from .torch_utils import env_int


@dataclass(frozen=True)
class DistInfo:
    rank: int = -1  # -1: not distributed
    local_rank: int = -1
    world_size: int = 1

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank in (-1, 0)


def dist_info_from_env():
    world_size = env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    return DistInfo(rank=env_int("RANK", 0), local_rank=env_int("LOCAL_RANK", 0), world_size=world_size)


def init_distributed(info, device, timeout_s=1800):
    """Join the process group (nccl for CUDA, gloo for CPU) unless one is already up."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)


def barrier(info):
    if info.enabled and dist.is_initialized():
        dist.barrier()


def from_main(value, info):
    """Rank 0's `value` on every process (a decision every rank must take alike, e.g. whether to resume)."""
    if not info.enabled or not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup_distributed(info):
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model, info, device):
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, output_device=device.index if ids else None)


def sync_batch_norm(model, info, device):
    """--sync-bn: BatchNorm statistics over the batches of all processes. Fused BatchNorm+Swish (and +Mish)
    layers become swishkernels.SyncBatchNormSwish2d (SyncBatchNormMish2d; gloo on CPU, NCCL on GPUs), other
    BatchNorms nn.SyncBatchNorm, which PyTorch runs on GPUs only: on a CPU they are a ValueError. One process:
    the model as it is."""
    import torch.nn as nn

    from swishkernels import BatchNormMish2d, BatchNormSwish2d, convert_sync_bn_swish

    if not info.enabled:
        return model
    if device.type != "cuda":
        plain = [name for name, m in model.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and not isinstance(m, (BatchNormSwish2d, BatchNormMish2d))]
        if plain:
            raise ValueError(f"{len(plain)} BatchNorm layers (first: {plain[0]}) are not fused with a Swish and "
                             "PyTorch's SyncBatchNorm runs only on GPUs; on a CPU add --activation swish --fuse-bn")
    return convert_sync_bn_swish(model)
