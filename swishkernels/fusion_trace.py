"""Watch one forward pass and record who feeds whom: the evidence `fuse_bn_swish` decides on.

Module structure alone cannot say whether a BatchNorm's output goes only to a Swish: ultralytics' `Conv`
and timm's ResNet blocks call `self.bn` and `self.act` from their own `forward`, a Sequential subclass may
use an output twice, and one SiLU instance may be shared by dozens of parents. So the model is run once
(no grad, buffers and RNG restored afterwards) with hooks that record, for every BatchNorm2d output:
  - every activation module call that receives it, with the parent module that made the call and the
    name under which that parent holds the activation (the reference fusion would replace);
  - every other torch function that reads it (a `+`, a `cat`, a conv, another activation's kernel...);
  - whether it outlives the forward (returned, cached) where no function call would show it.
Shape and dtype queries are not reads and are not recorded. The forward runs in training mode, where
training-only layers between a BatchNorm and its activation (DropBlock, dropout) read the BatchNorm output.
"""
import contextlib
import gc
import weakref
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

# Calls that read a tensor's metadata, not its values: fusion does not change what they return.
_METADATA_CALLS = {
    torch.Tensor.size, torch.Tensor.dim, torch.Tensor.numel, torch.Tensor.is_contiguous,
    torch.Tensor.stride, torch.Tensor.is_floating_point, torch.Tensor.__len__, torch.Tensor.element_size,
    torch.Tensor.shape.__get__, torch.Tensor.ndim.__get__, torch.Tensor.dtype.__get__,
    torch.Tensor.device.__get__, torch.Tensor.requires_grad.__get__, torch.Tensor.is_cuda.__get__,
    torch.Tensor.layout.__get__, torch.Tensor.grad_fn.__get__,
}


@dataclass
class ActCall:
    """One call of an activation module: which parent called it, under which attribute name(s)."""
    act: nn.Module
    parent: Optional[nn.Module]
    names: Tuple[str, ...]


@dataclass
class BnOutput:
    bn: nn.Module
    act_calls: List[ActCall] = field(default_factory=list)
    other_reads: List[str] = field(default_factory=list)  # descriptions of the other consumers
    outlived_forward: bool = False


@dataclass
class Trace:
    """What one forward pass showed."""
    module_names: Dict[int, str]                 # id(module) -> qualified name (first one seen)
    calls: Dict[int, int]                        # id(module) -> how many times it ran
    bn_outputs: List[BnOutput]                   # one per BatchNorm2d call, in call order


class _ReadRecorder(TorchFunctionMode):
    def __init__(self, tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _METADATA_CALLS and not self.tracer.inside_leaf:
            for value in tree_flatten((args, kwargs))[0]:
                if isinstance(value, torch.Tensor):
                    self.tracer.record_read(value, func)
        return func(*args, **kwargs)


class _Tracer:
    def __init__(self, model: nn.Module, is_bn: Callable, is_act: Callable):
        self.model = model
        self.is_bn, self.is_act = is_bn, is_act
        self.names = {}
        for name, module in model.named_modules(remove_duplicate=False):
            self.names.setdefault(id(module), name or "<model>")
        self.calls: Dict[int, int] = {}
        self.stack: List[Tuple[nn.Module, bool]] = []  # modules running, and whether each is a BN/activation
        self.live: Dict[int, Tuple[weakref.ref, BnOutput]] = {}  # id(tensor) -> BN output record
        self.bn_outputs: List[BnOutput] = []
        self.sequential_cursor: Dict[int, int] = {}  # exact nn.Sequential parents: next child index
        self.inside_leaf = 0  # > 0 while a BN or activation module runs: its own reads are not consumers

    # -- tensor bookkeeping ----------------------------------------------------------------------------
    def tracked(self, tensor) -> Optional[BnOutput]:
        entry = self.live.get(id(tensor))
        if entry is not None and entry[0]() is tensor:
            return entry[1]
        return None

    def record_read(self, tensor, func):
        record = self.tracked(tensor)
        if record is not None:
            where = self.names.get(id(self.stack[-1][0]), "?") if self.stack else "<model>"
            record.other_reads.append(f"{getattr(func, '__name__', str(func))} in {where}")

    # -- module hooks ----------------------------------------------------------------------------------
    def _caller_names(self, parent, module) -> Tuple[str, ...]:
        if parent is None:
            return ()
        names = tuple(n for n, child in parent._modules.items() if child is module)
        if len(names) > 1 and type(parent) is nn.Sequential:
            # nn.Sequential calls its children in order, so the call's position tells which name it was.
            order = list(parent._modules)
            start = self.sequential_cursor.get(id(parent), 0)
            for index in range(start, len(order)):
                if parent._modules[order[index]] is module:
                    self.sequential_cursor[id(parent)] = index + 1
                    return (order[index],)
        return names

    def pre_hook(self, module, args):
        leaf = self.is_bn(module) or self.is_act(module)
        if self.inside_leaf:  # called by a BatchNorm or activation (a folded activation's original): its own work
            self.stack.append((module, False))
            return
        self.calls[id(module)] = self.calls.get(id(module), 0) + 1
        parent = self.stack[-1][0] if self.stack else None
        if type(module) is nn.Sequential:
            self.sequential_cursor[id(module)] = 0
        names = ()
        if self.is_act(module):
            names = self._caller_names(parent, module)
        for value in tree_flatten(args)[0]:
            record = self.tracked(value) if isinstance(value, torch.Tensor) else None
            if record is None:
                continue
            if self.is_act(module):
                record.act_calls.append(ActCall(module, parent, names))
            elif self.is_bn(module):  # a leaf: its own reads are not recorded, so record the call itself
                record.other_reads.append(f"the input of {self.names.get(id(module), '?')}")
        self.stack.append((module, leaf))
        if leaf:
            self.inside_leaf += 1

    def post_hook(self, module, args, output):
        _, leaf = self.stack.pop()
        if not leaf:
            return
        self.inside_leaf -= 1
        if self.is_bn(module) and isinstance(output, torch.Tensor):
            record = BnOutput(module)
            self.bn_outputs.append(record)
            self.live[id(output)] = (weakref.ref(output), record)
        elif self.is_act(module) and isinstance(output, torch.Tensor):
            # An in-place activation returns its input: from here on that tensor holds Swish(bn(x)).
            self.live.pop(id(output), None)

    def finish(self):
        gc.collect()
        for ref, record in self.live.values():
            if ref() is not None:
                record.outlived_forward = True
        return Trace(self.names, self.calls, self.bn_outputs)


@contextlib.contextmanager
def _state_restored(model: nn.Module):
    """The probing forward runs in training mode (layers that act only in training, such as DropBlock or
    dropout between a BatchNorm and its activation, must be seen); buffers (running statistics, counters),
    each module's mode and the RNG state are put back afterwards."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    with torch.random.fork_rng(devices=[]):
        try:
            model.train()
            yield
        finally:
            for module, training in modes:
                module.training = training
            with torch.no_grad():
                for buffer, value in saved:
                    buffer.copy_(value)


def trace_forward(model: nn.Module, example_inputs: tuple, is_bn: Callable, is_act: Callable) -> Trace:
    """Run model(*example_inputs) once, in training mode, under observation; the model's state (buffers,
    modes, RNG) is left as it was. is_bn/is_act must not run modules themselves (hooks are live)."""
    tracer = _Tracer(model, is_bn, is_act)
    pre = nn.modules.module.register_module_forward_pre_hook(tracer.pre_hook)
    post = nn.modules.module.register_module_forward_hook(tracer.post_hook, always_call=True)
    try:
        value = None
        with _state_restored(model), torch.no_grad(), _ReadRecorder(tracer):
            output = model(*example_inputs)
        # The model's outputs are checked too: a BN output returned as is has a reader we cannot see.
        for value in tree_flatten(output)[0]:
            record = tracer.tracked(value) if isinstance(value, torch.Tensor) else None
            if record is not None:
                record.other_reads.append("returned by the model")
        del output, value
    finally:
        pre.remove()
        post.remove()
    return tracer.finish()
