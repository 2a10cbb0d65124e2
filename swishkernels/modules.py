"""nn.Module forms: drop-in replacements for nn.SiLU / the seed's Swish and nn.Mish."""
from typing import Optional

import torch
import torch.nn as nn

from . import functional, scripting

_is_compiling = functional._is_compiling  # torch.compiler.is_compiling: a constant True to torch.compile


class _Activation(nn.Module):
    activation = ""
    # The fast entry of the activation (functional.py), set per subclass from its `activation`: a class
    # attribute, so modules pickled before it existed still load. None from it means: take functional.activate.
    _fast_activate = staticmethod(functional.no_fast_entry)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._fast_activate = staticmethod(functional.FAST_ACTIVATE.get(cls.activation, functional.no_fast_entry))
        # module(x) in C when only forward would run; a subclass with a forward of its own never takes it.
        cls._fast_module_call = staticmethod(functional.FAST_MODULE_CALL.get(cls.activation, functional.no_fast_entry)
                                             if cls.forward is _Activation.forward else functional.no_fast_entry)

    _fast_module_call = staticmethod(functional.no_fast_entry)

    def __call__(self, *args, **kwargs):
        """nn.Module.__call__ with a shortcut: at 64 elements a call is all Python overhead, and nn.Module's
        call runs two Python frames of hook checks before forward. The extension does those checks and then
        what forward does (csrc/module.cpp: module_call); it answers None, and nn.Module.__call__ runs (looked
        up now: torch.fx patches it), whenever anything more could happen: hooks (the module's or global),
        Module.compile(), a forward set on the instance or a subclass, a named backend, tracing, transforms,
        modes, subclasses, torch.compile (which must see the module call)."""
        if not kwargs and len(args) == 1 and not _is_compiling():
            y = self._fast_module_call(self, args[0])
            if y is not None:
                return y
        return nn.Module.__call__(self, *args, **kwargs)

    def __init__(self, inplace: bool = False, backend: Optional[str] = None):
        super().__init__()
        self.activation = type(self).activation  # an instance attribute, so TorchScript sees it
        self.inplace = inplace
        self.backend = backend
        self._script_backend: Optional[str] = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this branch (scripting.py)
            return scripting.activate(x, self.activation, self.inplace, self._script_backend)
        if self.backend is None and not _is_compiling():  # functional.activate's fast entry, inlined
            y = self._fast_activate(x, self.inplace)
            if y is not None:
                return y
        return functional.activate(x, self.activation, self.inplace, self.backend)

    def __prepare_scriptable__(self):
        """Called by torch.jit.script: fixes the backend the scripted module calls (scripting.py)."""
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
