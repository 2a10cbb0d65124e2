"""timm: BatchNormAct2d (a BatchNorm2d subclass that applies its own `drop` and `act`) fused with Swish."""
import torch.nn as nn
from timm.layers.norm_act import BatchNormAct2d

from ..activation_kinds import activation_kind, has_hooks
from ..bn_swish import BatchNormSwish2d


class BatchNormActSwish2d(BatchNormSwish2d, BatchNormAct2d):
    """A timm BatchNormAct2d whose SiLU runs inside our fused kernel. Its `act` and `drop` submodules stay
    (they have no state), so state_dict keys and unfusing are unchanged; forward is BatchNormSwish2d's.
    timm's convert_sync_batchnorm turns it into a SyncBatchNormAct that keeps `act`: still BatchNorm + SiLU."""


def norm_act_verdict(module):
    """None if `module` is not a timm norm-act layer; else (fused class, None) when it can be fused, or
    (None, reason) when it cannot."""
    if type(module) is not BatchNormAct2d:
        return None
    if activation_kind(module.act) != "swish":
        return None, f"applies {type(module.act).__name__}, not a Swish/SiLU"
    if not isinstance(module.drop, nn.Identity):
        return None, f"applies {type(module.drop).__name__} between BatchNorm and Swish"
    if has_hooks(module.act) or has_hooks(module.drop):
        return None, "its act/drop submodules have hooks, which would no longer run"
    return BatchNormActSwish2d, None


def after_fuse(model):
    pass


def sync_batchnorm(module, process_group):
    """For sk.convert_sync_bn_swish: timm's own converter for its norm-act layer (BatchNormAct2d ->
    SyncBatchNormAct, same act, drop, Parameters and buffers); None for other modules."""
    if type(module) is not BatchNormAct2d:
        return None
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(module, process_group)
