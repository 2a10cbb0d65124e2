"""fuse_bn_swish / unfuse_bn_swish: BatchNorm2d -> activation pairs in any model, found by watching it run.

How a pair is found: one probing forward in training mode (fusion_trace.py) shows, for every BatchNorm of a type in
FUSED_BATCHNORMS (nn.BatchNorm2d, nn.SyncBatchNorm), who reads its output. A pair is fused only when that output
goes to exactly one activation module call (recognised by behaviour, activation_kinds.py, of a kind with a fused
class in FUSED_BATCHNORMS) and nowhere else, the BatchNorm runs once per forward, neither module has hooks, and the
call came from a parent that holds the activation (the slot to fold). An activation shared by several call sites is
fused per call. BatchNorm modules that apply the activation themselves (timm's BatchNormAct2d) are recognised by
their integration module (swishkernels/integrations/), imported only when the model contains that framework's
modules.

How a pair is fused: the BatchNorm module object itself becomes the fused module (its class is switched to
BatchNormSwish2d, a BatchNorm2d subclass with no state of its own), so its Parameters, buffers, state_dict
keys, hooks and every reference to it stay what they were: an optimizer, EMA or DDP built before fusion
keeps working. The parent's reference to the activation becomes a FoldedActivation, which passes through
the fused BatchNorm's output and applies the original activation to anything else; each half checks the
other is still there, so tools that touch one module alone keep the math (fused_pair.py).
`unfuse_bn_swish` reverses both.
"""
import importlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from . import bn_swish, fusion_trace, sync_bn_swish
from .activation_kinds import ActivationKinds, has_hooks
from .bn_swish import BatchNormMish2d, BatchNormSwish2d
from .fused_pair import FoldedActivation, FusedPair, folded_in, new_token
from .sync_bn_swish import SyncBatchNormMish2d, SyncBatchNormSwish2d

# BatchNorm class (exact type) -> {activation kind: the fused class it becomes, which applies that activation
# (a subclass with no state of its own)}.
FUSED_BATCHNORMS = {
    nn.BatchNorm2d: {"swish": BatchNormSwish2d, "mish": BatchNormMish2d},
    nn.SyncBatchNorm: {"swish": SyncBatchNormSwish2d, "mish": SyncBatchNormMish2d},
}
# Frameworks with an integration module: the top-level package of a module class -> our module.
INTEGRATIONS = {"timm": "swishkernels.integrations.timm", "ultralytics": "swishkernels.integrations.ultralytics"}
PROBE_SIZE = 64  # side of the guessed example image: deep enough for stride-32 models (2x2 at the end)
FoldedSwish = FoldedActivation  # the name it had when only Swish was fused


def is_batchnorm(module) -> bool:
    """The BatchNorms fusion pairs with the activation after them (exact types: subclasses may differ)."""
    return type(module) in FUSED_BATCHNORMS


def is_swish(module) -> bool:
    return ActivationKinds()(module) == "swish"


@dataclass(frozen=True)
class Skipped:
    module: str
    reason: str


@dataclass(frozen=True)
class FusionReport:
    """What fuse_bn_swish fused (`fused`: BatchNorm names), what it left alone and why (`skipped`), and which
    activation classes it recognised by behaviour (`recognised`: (class, kind) pairs). str(report) is a
    readable summary; len(report.fused) the number of fused pairs."""

    fused: Tuple[str, ...]
    skipped: Tuple[Skipped, ...]
    recognised: Tuple[Tuple[str, str], ...] = ()

    def __repr__(self):
        return f"FusionReport(fused={len(self.fused)}, skipped={len(self.skipped)})"

    def __str__(self):
        lines = [f"fuse_bn_swish: fused {len(self.fused)} BatchNorm->activation pairs, "
                 f"left {len(self.skipped)} alone"]
        lines += [f"  recognised {cls} as {kind} by its behaviour" for cls, kind in self.recognised]
        lines += [f"  fused    {name}" for name in self.fused]
        lines += [f"  skipped  {s.module}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def _integrations(model: nn.Module):
    packages = {type(m).__module__.partition(".")[0] for m in model.modules()}
    return [importlib.import_module(INTEGRATIONS[p]) for p in sorted(packages & INTEGRATIONS.keys())]


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


def _activation_kinds(model: nn.Module, kinds: ActivationKinds) -> Dict[int, str]:
    """id(module) -> activation kind for every module of the model (checked before the probing forward:
    the numerical checks run modules, which the probe's hooks must not see)."""
    found = {}
    for module in model.modules():
        kind = module.kind if type(module) is FoldedActivation else kinds(module)
        if kind is not None:
            found[id(module)] = kind
    return found


def _trace(model, example_inputs, act_kinds: Dict[int, str]):
    guessed = example_inputs is None
    if guessed:
        example_inputs = _guess_example_inputs(model)
    elif not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    try:
        with sync_bn_swish.local_statistics(model):  # no collective (and no CPU refusal) in the probe
            return fusion_trace.trace_forward(model, example_inputs, is_batchnorm, lambda m: id(m) in act_kinds)
    except Exception as exc:  # the model's own error, reported with what we tried
        tried = (f"a guessed input of shape {tuple(example_inputs[0].shape)}" if guessed
                 else "the example_inputs given")
        raise RuntimeError(
            f"fuse_bn_swish: running the model in training mode on {tried} to find its BatchNorm->activation "
            f"pairs failed ({type(exc).__name__}: {exc}). Pass example_inputs=(x,) with an input the model "
            "accepts in training mode.") from exc


def _pair_problem(bn, record, trace: fusion_trace.Trace, act_kinds: Dict[int, str]) -> Optional[str]:
    """Why this BatchNorm cannot be fused with the activation after it, or None if it can."""
    calls = trace.calls.get(id(bn), 0)
    if calls == 0:
        return "did not run in the probing forward"
    if calls > 1:
        return f"runs {calls} times per forward (shared); fusing would add the activation to every use"
    if not record.act_calls:
        reads = ", ".join(dict.fromkeys(record.other_reads)) or "nothing"
        return f"not followed by a Swish/SiLU or Mish (its output goes to: {reads})"
    if record.other_reads:
        return f"its output is also used by {', '.join(dict.fromkeys(record.other_reads))}"
    if len(record.act_calls) > 1:
        return f"its output goes to {len(record.act_calls)} activation calls"
    if record.outlived_forward:
        return "its output is kept after the forward (returned or cached), so it must stay un-activated"
    if has_hooks(bn):
        return "the BatchNorm has hooks, which would see the activation's output instead of its own"
    call = record.act_calls[0]
    kind = act_kinds[id(call.act)]
    if kind not in FUSED_BATCHNORMS[type(bn)]:
        return f"followed by {type(call.act).__name__} ({kind}): no fused {type(bn).__name__} for it yet"
    if has_hooks(call.act):
        return f"the {type(call.act).__name__} has hooks, which would no longer run"
    if call.parent is None or not call.names:
        if isinstance(call.parent, torch.fx.GraphModule):
            return (f"the {type(call.act).__name__} is called by torch.fx generated code from a submodule that "
                    "holds it, so the slot to fold is not the caller's: fuse the model before torch.fx traces it")
        return f"the {type(call.act).__name__} is called from outside the modules holding it, so its slot is unknown"
    return None


def _fold(call: fusion_trace.ActCall, kind: str, token: int, bn_name: str) -> None:
    """Put a FoldedActivation partnered with `token` in every slot of the calling parent that holds the
    activation (one object for all of them: the call may have gone through any)."""
    folded = folded_in(call.parent, call.names[0])
    if folded is None:
        folded = FoldedActivation(call.act, kind)
        for name, child in call.parent._modules.items():
            if child is call.act:
                call.parent._modules[name] = folded
    folded.add_partner(token, bn_name)


def fuse_bn_swish(model: nn.Module, recompute: bool = False, backend: Optional[str] = None, *,
                  example_inputs: Optional[Any] = None, verbose: bool = False) -> FusionReport:
    """Fuse every BatchNorm2d -> Swish pair of `model` into BatchNormSwish2d and every BatchNorm2d -> Mish pair
    into BatchNormMish2d, in place (nn.SyncBatchNorm -> Swish/Mish pairs into SyncBatchNormSwish2d /
    SyncBatchNormMish2d, which keep synchronizing over the same process group).

    Activations are recognised by behaviour: nn.SiLU, sk.Swish and any parameter-free module computing
    x*sigmoid(x); nn.Mish, sk.Mish and any computing x*tanh(softplus(x)) (activation_kinds.py). Works on any
    module structure (nn.Sequential, blocks that call `bn`/`act` by attribute, one activation shared by many parents
    or called on other tensors too: fused per call) by
    running the model once, in training mode, on `example_inputs` (default: a random 2 x C x 64 x 64 image
    batch, C taken from the first Conv2d; pass your own for other inputs). That forward is under no_grad
    and leaves buffers, modes and RNG state as they were. The model's own Parameter and buffer objects and
    state_dict keys are kept. Returns a FusionReport (`.fused`, `.skipped` with reasons, `.recognised`,
    a readable str()); `verbose=True` prints it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse_bn_swish: expected an nn.Module, got {type(model).__name__}")
    kinds = ActivationKinds()
    if is_batchnorm(model) or kinds(model) is not None:
        raise ValueError("fuse_bn_swish: the model itself is a BatchNorm or an activation; fuse the model that "
                         "holds it")
    names = {id(m): n for n, m in reversed(list(model.named_modules(remove_duplicate=False)))}
    integrations = _integrations(model)
    fused: List[str] = []
    skipped: List[Skipped] = []

    # Norm layers that apply the activation themselves: their integration module decides, no trace needed.
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

    if any(is_batchnorm(m) for m in model.modules()):
        act_kinds = _activation_kinds(model, kinds)
        trace = _trace(model, example_inputs, act_kinds)
        records = {id(r.bn): r for r in trace.bn_outputs}
        for bn in dict.fromkeys(m for m in model.modules() if is_batchnorm(m)):
            record = records.get(id(bn), fusion_trace.BnOutput(bn))
            problem = _pair_problem(bn, record, trace, act_kinds)
            if problem is not None:
                skipped.append(Skipped(names[id(bn)], problem))
                continue
            call = record.act_calls[0]
            kind = act_kinds[id(call.act)]
            token = new_token()
            _fold(call, kind, token, names[id(bn)])
            _switch_class(bn, FUSED_BATCHNORMS[type(bn)][kind], backend, recompute)
            bn.fused_pair = FusedPair(token, call.parent, call.names[0], names[id(bn)])
            fused.append(names[id(bn)])

    for integration in integrations:
        integration.after_fuse(model)
    report = FusionReport(tuple(fused), tuple(skipped), tuple(sorted(kinds.recognised.items())))
    if verbose:
        print(report)
    return report


def unfuse_bn_swish(model: nn.Module) -> int:
    """Undo fuse_bn_swish: every fused BatchNorm becomes its original class again and every FoldedActivation
    its original activation (same objects, same Parameters). Returns how many BatchNorms were restored.
    BatchNormSwish2d layers built directly, not by fuse_bn_swish, are left as they are."""
    for parent in model.modules():
        for name, child in list(parent._modules.items()):
            if type(child) is FoldedActivation:
                parent._modules[name] = child.original
    restored = 0
    for module in model.modules():
        original = module.__dict__.pop("_sk_unfused_class", None)
        if original is not None:
            module.__class__ = original
            del module.backend, module.recompute
            module.__dict__.pop("fused_pair", None)
            module.__dict__.pop("_sk_resolved", None)  # the fused layer's backend cache (bn_swish.py)
            restored += 1
    return restored


def recompute_in_forward(model: nn.Module) -> Tuple[RemovableHandle, RemovableHandle]:
    """Run every forward of `model` inside sk.recompute_bn_swish() (for trainers whose loop you do not
    write). Returns the hook handles; call .remove() on both to stop. Under torch.compile the hooks do
    nothing: the compiler decides what to recompute (fused pairs compile as BatchNorm + activation)."""
    active = []

    def enter(module, args):
        if torch.compiler.is_compiling():
            return
        context = bn_swish.recompute_bn_swish()
        context.__enter__()
        active.append(context)

    def leave(module, args, output):
        if active and not torch.compiler.is_compiling():
            active.pop().__exit__(None, None, None)

    return (model.register_forward_pre_hook(enter), model.register_forward_hook(leave, always_call=True))
