"""The experiment's memory column on a CPU: MB autograd saves for backward in one training batch (fp32,
exact, device-independent), from the library (`yolo.memory`, counting with `sk.saved_for_backward`), so an
installed `yolo` reports it too."""
from typing import Dict, Optional, Tuple

from .variants import Variant


def saved_activation_mb(args, row: Variant, num_classes: int, cache: Optional[Dict[Tuple, float]] = None) -> float:
    """Saved MB of the variant's model at the experiment's image size and batch. Variants that change only
    the loss, the init or the optimizer share their model's number (`cache`, keyed by what shapes memory)."""
    from yolo.memory import darknet_saved

    o = row.options
    key = (o.get("cfg", args.cfg), o.get("activation"), bool(o.get("fuse_bn")), bool(o.get("fuse_bn_recompute")),
           args.img_size, args.batch_size, num_classes)
    if cache is not None and key in cache:
        return cache[key]
    cfg, activation, fuse_bn, recompute = key[:4]
    mb = darknet_saved(cfg, args.img_size, args.batch_size, num_classes, activation=activation, fuse_bn=fuse_bn,
                       fuse_bn_recompute=recompute).mib
    if cache is not None:
        cache[key] = mb
    return mb
