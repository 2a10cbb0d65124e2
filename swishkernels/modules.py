"""nn.Module forms: drop-in replacements for nn.SiLU / the seed's Swish and nn.Mish."""
from typing import Callable, Dict, Optional, Type, Union

import torch
import torch.nn as nn

from . import functional, scripting


class _Activation(nn.Module):
    activation = ""

    def __init__(self, inplace: bool = False, backend: Optional[str] = None):
        super().__init__()
        self.activation = type(self).activation  # an instance attribute, so TorchScript sees it
        self.inplace = inplace
        self.backend = backend
        self._script_backend: Optional[str] = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this branch (scripting.py)
            return scripting.activate(x, self.activation, self.inplace, self._script_backend)
        return functional.activate(x, self.activation, self.inplace, self.backend)

    def __prepare_scriptable__(self):
        """Called by torch.jit.script: fixes the backend the scripted module calls (scripting.py)."""
        self.activation = type(self).activation  # also for modules pickled before these attributes
        self._script_backend = scripting.script_backend(self.backend)
        return self

    def extra_repr(self) -> str:
        parts = ["inplace=True"] if self.inplace else []
        if self.backend is not None:
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


class Swish(_Activation):
    """x * sigmoid(x) (a.k.a. SiLU). Saves only its input for backward. `inplace=True` overwrites the
    input only when no gradient is needed."""
    activation = "swish"


class Mish(_Activation):
    """x * tanh(softplus(x)). Saves only its input for backward."""
    activation = "mish"


Replacement = Union[Type[nn.Module], Callable[[nn.Module], nn.Module]]


def _default_mapping() -> Dict[Type[nn.Module], Replacement]:
    return {
        nn.SiLU: lambda old: Swish(inplace=old.inplace),
        nn.Mish: lambda old: Mish(inplace=old.inplace),
    }


def _build(replacement: Replacement, old: nn.Module) -> nn.Module:
    if isinstance(replacement, type):
        return replacement()
    new = replacement(old)
    if not isinstance(new, nn.Module):
        raise TypeError(f"replace_activations: the replacement for {type(old).__name__} returned "
                        f"{type(new).__name__}, not an nn.Module")
    return new


def replace_activations(model: nn.Module, mapping: Optional[Dict[Type[nn.Module], Replacement]] = None) -> int:
    """Swap activation modules in place: nn.SiLU -> Swish and nn.Mish -> Mish (keeping `inplace`), plus
    `mapping` entries {module class: replacement class, or callable(old module) -> new module}. Types
    match exactly (subclasses are left alone).

    Every reference is replaced, including one instance held by many parents (ultralytics' `Conv` blocks
    all hold one class-level nn.SiLU): each old instance gets one new instance, so what was shared stays
    shared. Returns how many references were replaced."""
    table = _default_mapping()
    table.update(mapping or {})
    if type(model) in table:
        raise ValueError("replace_activations: the model itself is an activation; replace it directly")
    replacements: Dict[int, nn.Module] = {}
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is None or type(child) not in table:
                continue
            if id(child) not in replacements:
                replacements[id(child)] = _build(table[type(child)], child)
            parent._modules[name] = replacements[id(child)]
            replaced += 1
    return replaced
