"""How much a model keeps for backward: `sk.saved_for_backward(model, x)`.

Counted with `torch.autograd.graph.saved_tensors_hooks`: every tensor autograd packs during one forward,
each storage once (a conv's input is the previous activation's output: one buffer, not two), the module's
own parameters and buffers left out (they exist whatever the activation). Exact on any device, and linear
in the batch: a small CPU batch gives the per-image cost of a large GPU batch.
`sk.tensors_saved_by_graph(output)` reads what an autograd graph keeps off the graph itself, which is how to
measure a torch.compile'd model (saved_tensors_hooks around a compiled call make dynamo compile another graph).
"""
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from . import bn_swish

MiB = 2**20


@dataclass(frozen=True)
class SavedForBackward:
    """What one forward kept for backward: bytes and distinct storages."""
    bytes: int
    tensors: int

    @property
    def mib(self) -> float:
        return self.bytes / MiB


def _storage_key(tensor: torch.Tensor):
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def saved_for_backward(fn: Callable[..., Any], *args: Any, recompute: bool = False,
                       exclude: Optional[nn.Module] = None, **kwargs: Any) -> SavedForBackward:
    """Bytes and distinct storages autograd saves while running fn(*args, **kwargs).

    `exclude`: a module whose parameters and buffers are not counted (default: fn itself when it is a
    module). `recompute=True` counts as if the call ran inside `sk.recompute_bn_swish()`: outputs of
    BatchNormSwish2d(recompute=True) layers are kept as recipes, which keep nothing new. The result of fn
    stays alive until counted, so no storage is freed and its address reused while counting."""
    if exclude is None and isinstance(fn, nn.Module):
        exclude = fn
    skip = set()
    if exclude is not None:
        skip = {_storage_key(t) for t in [*exclude.parameters(), *exclude.buffers()]}
    seen = {}

    def pack(tensor):
        packed = bn_swish.pack_saved_tensor(tensor) if recompute else tensor
        if isinstance(packed, torch.Tensor):
            key = _storage_key(packed)
            if key not in skip:
                seen.setdefault(key, key[1])
        return packed

    unpack = bn_swish.unpack_saved_tensor if recompute else (lambda packed: packed)
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = fn(*args, **kwargs)
    result = SavedForBackward(bytes=sum(seen.values()), tensors=len(seen))
    del out
    return result


def tensors_saved_by_graph(outputs: Union[torch.Tensor, Sequence[torch.Tensor]],
                           exclude: Optional[nn.Module] = None) -> List[torch.Tensor]:
    """The tensors (one per storage) the autograd graph behind `outputs` (a tensor or a list of them) keeps for
    backward, read off the graph itself (no saved_tensors_hooks: around a compiled call those make dynamo
    compile a second graph, so they would measure that one). A compiled region is one CompiledFunctionBackward
    node whose `saved_tensors` are exactly what its backward graph takes; eager nodes expose theirs as
    `_saved_*` attributes. Storages of `exclude`'s parameters and buffers are left out."""
    skip = set()
    if exclude is not None:
        skip = {t.untyped_storage().data_ptr() for t in [*exclude.parameters(), *exclude.buffers()]}
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    kept, seen_nodes, stack = {}, set(), [out.grad_fn for out in outputs]
    while stack:
        node = stack.pop()
        if node is None or node in seen_nodes:
            continue
        seen_nodes.add(node)
        tensors = list(node.saved_tensors) if hasattr(node, "saved_tensors") else []
        tensors += [getattr(node, name) for name in dir(node) if name.startswith("_saved_")]
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in skip:
                kept.setdefault(tensor.untyped_storage().data_ptr(), tensor)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return list(kept.values())
