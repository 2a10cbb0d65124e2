"""fuse_bn_swish / unfuse_bn_swish: BatchNorm2d -> Swish/SiLU pairs in any model, found by watching it run.

How a pair is found: one probing forward (fusion_trace.py) shows, for every nn.BatchNorm2d, who reads its
output. A pair is fused only when that output goes to exactly one Swish/SiLU module call and nowhere else,
the BatchNorm runs once per forward, neither module has hooks, and the parent that called the Swish holds it
under one name that runs only on that tensor. BatchNorm modules that apply the activation themselves (timm's
BatchNormAct2d) are recognised by their integration module (swishkernels/integrations/), imported only
when the model contains that framework's modules.

How a pair is fused: the BatchNorm module object itself becomes the fused module (its class is switched to
BatchNormSwish2d, a BatchNorm2d subclass with no state of its own), so its Parameters, buffers, state_dict
keys, hooks and every reference to it stay what they were: an optimizer, EMA or DDP built before fusion
keeps working. The parent's reference to the Swish becomes a FoldedSwish (a pass-through that remembers the
original), so the activation is not applied twice. `unfuse_bn_swish` reverses both.
"""
import importlib
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from . import bn_swish, fusion_trace, sync_bn_swish
from .bn_swish import BatchNormSwish2d
from .modules import Swish
from .sync_bn_swish import SyncBatchNormSwish2d

SWISH_TYPES = (nn.SiLU, Swish)  # exact types: a subclass may change forward
# Frameworks with an integration module: the top-level package of a module class -> our module.
INTEGRATIONS = {"timm": "swishkernels.integrations.timm", "ultralytics": "swishkernels.integrations.ultralytics"}
PROBE_SIZE = 64  # side of the guessed example image: deep enough for stride-32 models (2x2 at the end)


# BatchNorm classes fused with the Swish after them (exact types) -> the fused class they become.
FUSED_CLASS = {nn.BatchNorm2d: BatchNormSwish2d, nn.SyncBatchNorm: SyncBatchNormSwish2d}


def is_fusable_bn(module) -> bool:
    return type(module) in FUSED_CLASS


def is_swish(module) -> bool:
    return type(module) in SWISH_TYPES


class FoldedSwish(nn.Module):
    """Stands where a Swish/SiLU was after fuse_bn_swish folded it into the BatchNorm before it: returns
    its input. Keeps the original module (not as a submodule: state_dict and modules() are unchanged) so
    unfuse_bn_swish can put it back."""

    def __init__(self, original: nn.Module, into: str):
        super().__init__()
        self.__dict__["original"] = original
        self.into = into

    def forward(self, x):
        return x

    def extra_repr(self):
        return f"folded into {self.into}"


@dataclass(frozen=True)
class Skipped:
    module: str
    reason: str


class FusionReport(int):
    """The number of fused pairs (an int, as fuse_bn_swish always returned), plus what was fused and what
    was left alone and why. str(report) is a readable summary."""

    fused: Tuple[str, ...]
    skipped: Tuple[Skipped, ...]

    def __new__(cls, fused: List[str], skipped: List[Skipped]):
        report = super().__new__(cls, len(fused))
        report.fused, report.skipped = tuple(fused), tuple(skipped)
        return report

    def __repr__(self):
        return f"FusionReport(fused={len(self.fused)}, skipped={len(self.skipped)})"

    def __str__(self):
        lines = [f"fuse_bn_swish: fused {len(self.fused)} BatchNorm->Swish pairs, left {len(self.skipped)} alone"]
        lines += [f"  fused    {name}" for name in self.fused]
        lines += [f"  skipped  {s.module}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def _integrations(model: nn.Module):
    packages = {type(m).__module__.partition(".")[0] for m in model.modules()}
    return [importlib.import_module(INTEGRATIONS[p]) for p in sorted(packages & INTEGRATIONS.keys())]


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def _switch_class(module: nn.Module, fused_class, backend, recompute) -> None:
    original = type(module)
    module.__class__ = fused_class
    module.backend, module.recompute = backend, recompute
    module._sk_unfused_class = original


def _guess_example_inputs(model: nn.Module):
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))), None)
    channels = first.in_channels if isinstance(first, nn.Conv2d) else first.num_features
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()))
    dtype = tensor.dtype if tensor.dtype.is_floating_point else torch.float32
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, channels, PROBE_SIZE, PROBE_SIZE, generator=generator, dtype=dtype).to(tensor.device)
    return (x,)


def _trace(model, example_inputs):
    guessed = example_inputs is None
    if guessed:
        example_inputs = _guess_example_inputs(model)
    elif not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    try:
        with sync_bn_swish.local_statistics(model):  # no collective (and no CPU refusal) in the probe
            return fusion_trace.trace_forward(model, example_inputs, is_fusable_bn, is_swish)
    except Exception as exc:  # the model's own error, reported with what we tried
        tried = (f"a guessed input of shape {tuple(example_inputs[0].shape)}" if guessed
                 else "the example_inputs given")
        raise RuntimeError(
            f"fuse_bn_swish: running the model on {tried} to find its BatchNorm->Swish pairs failed "
            f"({type(exc).__name__}: {exc}). Pass example_inputs=(x,) with an input the model accepts.") from exc


def _pair_problem(bn, record, trace: fusion_trace.Trace) -> Optional[str]:
    """Why this BatchNorm cannot be fused with the Swish after it, or None if it can."""
    calls = trace.calls.get(id(bn), 0)
    if calls == 0:
        return "did not run in the probing forward"
    if calls > 1:
        return f"runs {calls} times per forward (shared); fusing would add Swish to every use"
    if not record.act_calls:
        reads = ", ".join(dict.fromkeys(record.other_reads)) or "nothing"
        return f"not followed by a Swish/SiLU (its output goes to: {reads})"
    if record.other_reads:
        return f"its output is also used by {', '.join(dict.fromkeys(record.other_reads))}"
    if len(record.act_calls) > 1:
        return f"its output goes to {len(record.act_calls)} Swish calls"
    if record.outlived_forward:
        return "its output is kept after the forward (returned or cached), so it must stay un-activated"
    if _has_hooks(bn):
        return "the BatchNorm has hooks, which would see the Swish output instead of its own"
    call = record.act_calls[0]
    if _has_hooks(call.act):
        return "the Swish has hooks, which would no longer run"
    if len(call.names) != 1:
        where = "is called from outside any parent" if call.parent is None else "is held under several names"
        return f"the Swish {where}, so the reference to replace is ambiguous"
    if trace.act_reference_calls.get((id(call.parent), call.names[0]), 0) != 1:
        return "the Swish it feeds also runs on other tensors in the same parent"
    return None


def fuse_bn_swish(model: nn.Module, recompute: bool = False, backend: Optional[str] = None, *,
                  example_inputs: Optional[Any] = None, verbose: bool = False) -> FusionReport:
    """Fuse every BatchNorm2d -> Swish/SiLU pair of `model` into BatchNormSwish2d, in place (nn.SyncBatchNorm ->
    Swish/SiLU pairs into SyncBatchNormSwish2d, which keeps synchronizing over the same process group).

    Works on any module structure (nn.Sequential, blocks that call `bn`/`act` by attribute, one SiLU shared
    by many parents) by running the model once on `example_inputs` (default: a random 2 x C x 64 x 64
    image batch, C taken from the first Conv2d; pass your own for other inputs). That forward is under
    no_grad and leaves buffers and RNG state as they were. The model's own Parameter and buffer objects and
    state_dict keys are kept. Returns a FusionReport: an int (how many pairs were fused) with `.fused`,
    `.skipped` (each with its reason) and a readable str(); `verbose=True` prints it.
    """
    if isinstance(model, nn.BatchNorm2d) or is_swish(model):
        raise ValueError("fuse_bn_swish: the model itself is a BatchNorm or Swish; fuse the model that holds it")
    names = {id(m): n for n, m in reversed(list(model.named_modules(remove_duplicate=False)))}
    integrations = _integrations(model)
    fused: List[str] = []
    skipped: List[Skipped] = []

    # Norm layers that apply the Swish themselves: their integration module decides, no trace needed.
    for module in model.modules():
        for integration in integrations:
            verdict = integration.norm_act_verdict(module)
            if verdict is None:
                continue
            fused_class, reason = verdict
            if reason is None:
                _switch_class(module, fused_class, backend, recompute)
                fused.append(names[id(module)])
            else:
                skipped.append(Skipped(names[id(module)], reason))

    if any(is_fusable_bn(m) for m in model.modules()):
        trace = _trace(model, example_inputs)
        records = {id(r.bn): r for r in trace.bn_outputs}
        for bn in dict.fromkeys(m for m in model.modules() if is_fusable_bn(m)):
            record = records.get(id(bn), fusion_trace.BnOutput(bn))
            problem = _pair_problem(bn, record, trace)
            if problem is not None:
                skipped.append(Skipped(names[id(bn)], problem))
                continue
            call = record.act_calls[0]
            _switch_class(bn, FUSED_CLASS[type(bn)], backend, recompute)
            call.parent._modules[call.names[0]] = FoldedSwish(call.act, names[id(bn)])
            fused.append(names[id(bn)])

    for integration in integrations:
        integration.after_fuse(model)
    report = FusionReport(fused, skipped)
    if verbose:
        print(report)
    return report


def unfuse_bn_swish(model: nn.Module) -> int:
    """Undo fuse_bn_swish: every fused BatchNorm becomes its original class again and every FoldedSwish its
    original activation (same objects, same Parameters). Returns how many BatchNorms were restored.
    BatchNormSwish2d layers built directly, not by fuse_bn_swish, are left as they are."""
    for parent in model.modules():
        for name, child in list(parent._modules.items()):
            if isinstance(child, FoldedSwish):
                parent._modules[name] = child.original
    restored = 0
    for module in model.modules():
        original = module.__dict__.pop("_sk_unfused_class", None)
        if original is not None:
            module.__class__ = original
            del module.backend, module.recompute
            restored += 1
    return restored


def recompute_in_forward(model: nn.Module) -> Tuple[RemovableHandle, RemovableHandle]:
    """Run every forward of `model` inside sk.recompute_bn_swish() (for trainers whose loop you do not
    write). Returns the hook handles; call .remove() on both to stop."""
    active = []

    def enter(module, args):
        context = bn_swish.recompute_bn_swish()
        context.__enter__()
        active.append(context)

    def leave(module, args, output):
        if active:
            active.pop().__exit__(None, None, None)

    return (model.register_forward_pre_hook(enter), model.register_forward_hook(leave, always_call=True))
