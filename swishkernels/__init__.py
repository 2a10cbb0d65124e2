"""swishkernels: fused Swish-family activations whose backward saves only the input.

    import swishkernels as sk
    y = sk.swish(x)            # or sk.Swish()(x), sk.SwishFunction.apply(x)
    sk.available_backends("cuda")
"""
from . import reference
from ._version import __version__  # noqa: F401  (the public version attribute)
from .autograd import MishFunction, SwishFunction
from .backends import available_backends
from .functional import mish, swish
from .modules import Mish, Swish
from .replace import replace_activations

__all__ = [
    "swish", "mish", "Swish", "Mish", "SwishFunction", "MishFunction",
    "available_backends", "replace_activations", "reference",
]

from .bn_swish import BatchNormMish2d, BatchNormSwish2d, recompute_bn_swish  # noqa: E402
from .fusion import FusionReport, fuse_bn_swish, recompute_in_forward, unfuse_bn_swish  # noqa: E402
from .memory import SavedForBackward, saved_for_backward, tensors_saved_by_graph  # noqa: E402

__all__ += ["BatchNormSwish2d", "BatchNormMish2d", "fuse_bn_swish", "unfuse_bn_swish", "recompute_bn_swish",
            "recompute_in_forward", "FusionReport", "saved_for_backward", "SavedForBackward", "tensors_saved_by_graph"]

from .sync_bn_swish import (  # noqa: E402
    SyncBatchNormMish2d,
    SyncBatchNormSwish2d,
    convert_sync_bn_swish,
    revert_sync_bn_swish,
)

__all__ += ["SyncBatchNormSwish2d", "SyncBatchNormMish2d", "convert_sync_bn_swish", "revert_sync_bn_swish"]

from .memory_policy import keep_conv_outputs, memory_policy, remove_memory_policy  # noqa: E402

__all__ += ["memory_policy", "remove_memory_policy", "keep_conv_outputs"]
