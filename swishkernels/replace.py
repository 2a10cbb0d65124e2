"""replace_activations: swap a model's activation modules for ours (or anything else), in place."""
from typing import Callable, Dict, Optional, Type, Union

import torch.nn as nn

from .activation_kinds import ActivationKinds
from .modules import Mish, Swish

Replacement = Union[Type[nn.Module], Callable[[nn.Module], nn.Module]]


def _build(replacement: Replacement, old: nn.Module) -> nn.Module:
    if isinstance(replacement, type):
        return replacement()
    new = replacement(old)
    if not isinstance(new, nn.Module):
        raise TypeError(f"replace_activations: the replacement for {type(old).__name__} returned "
                        f"{type(new).__name__}, not an nn.Module")
    return new


def replace_activations(model: nn.Module, mapping: Optional[Dict[Type[nn.Module], Replacement]] = None) -> int:
    """Swap activation modules in place: every module that computes Swish -> Swish and every one that
    computes Mish -> Mish (keeping `inplace`), recognised by behaviour (nn.SiLU, nn.Mish, and parameter-free
    modules checked numerically: efficientnet-pytorch's MemoryEfficientSwish, timm's Swish, YOLOX's SiLU...;
    see activation_kinds.py), plus `mapping` entries {module class: replacement class, or callable(old
    module) -> new module}, which match types exactly and take precedence.

    Every reference is replaced, including one instance held by many parents (ultralytics' `Conv` blocks
    all hold one class-level nn.SiLU): each old instance gets one new instance, so what was shared stays
    shared. Returns how many references were replaced."""
    table = dict(mapping or {})
    kinds = ActivationKinds()
    by_kind = {"swish": Swish, "mish": Mish}

    def replacement_for(module) -> Optional[Replacement]:
        if type(module) in table:
            return table[type(module)]
        kind = kinds(module)
        if kind is None or type(module) is by_kind[kind]:
            return None
        return lambda old: by_kind[kind](inplace=bool(getattr(old, "inplace", False)))

    if replacement_for(model) is not None:
        raise ValueError("replace_activations: the model itself is an activation; replace it directly")
    replacements: Dict[int, nn.Module] = {}
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) not in replacements:
                replacement = replacement_for(child)
                if replacement is None:
                    continue
                replacements[id(child)] = _build(replacement, child)
            parent._modules[name] = replacements[id(child)]
            replaced += 1
    return replaced
