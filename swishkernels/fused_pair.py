"""The two halves of a fused BatchNorm -> activation pair, each keeping the math right without the other.

fuse_bn_swish turns the BatchNorm into a fused layer that also applies the activation, and puts a
`FoldedActivation` in the slot (parent module + attribute name) where the activation was called. Tools
that touch one of the two modules alone must not change the model's math: a framework's conv+BN folding
(yolov5 / YOLOX / ultralytics `fuse()`: `act(conv(x))` with the BatchNorm gone), SyncBatchNorm conversion
(a new, plain BatchNorm in its place), `torch.ao.quantization.fuse_modules`, a module swap (EfficientNet-
PyTorch's `set_swish`), an activation shared with calls on tensors no BatchNorm made. So each half checks:

- The fused BatchNorm applies the activation only while its `FoldedActivation` still sits in the slot it
  was folded into (`FusedPair.intact`); otherwise it is a plain BatchNorm and whatever now sits in the
  slot applies what it applies. When it applies it, it marks its output tensor with its pair's token.
- The `FoldedActivation` passes through only a tensor marked by one of its partners, unmodified since;
  any other input gets the original activation module. A marked tensor from another pair, a view of a
  marked tensor or one modified in place since is an error (BatchNorm -> change -> activation cannot be
  computed from an activated tensor): the probing forward did not see that path.

Under torch.compile the pair is simply unfused (plain BatchNorm, then the original activation): the
compiler sees the math, recomputes BatchNorm+activation by itself, and no Python bookkeeping breaks the graph.
"""
import itertools
from typing import Optional, Set

import torch
import torch.nn as nn

_TOKENS = itertools.count(1)
MARK = "_swishkernels_fused_pair"  # tensor attribute: (pair token, tensor version, BatchNorm name)
SCRIPT_ERROR = ("torch.jit.script cannot compile {what} (fused by swishkernels): script an unfused copy "
                "(sk.unfuse_bn_swish(copy.deepcopy(model))), or use torch.jit.trace, torch.export or torch.compile")


def new_token() -> int:
    return next(_TOKENS)


class FoldedActivation(nn.Module):
    """Stands where an activation was called on the output of a BatchNorm that fuse_bn_swish fused with it:
    returns the fused BatchNorm's (already activated) output as is, and applies the original activation to
    anything else. Keeps the original module (not as a submodule: state_dict and modules() are unchanged)
    so unfuse_bn_swish can put it back."""

    def __init__(self, original: nn.Module, kind: str):
        super().__init__()
        self.__dict__["original"] = original
        self.kind = kind
        self.tokens: Set[int] = set()
        self.into = []  # names of the fused BatchNorms, for messages

    def add_partner(self, token: int, bn_name: str) -> None:
        self.tokens.add(token)
        self.into.append(bn_name)

    def forward(self, x):
        if not torch.compiler.is_compiling():
            mark = getattr(x, MARK, None)
            if mark is not None:
                token, version, bn_name = mark
                if token not in self.tokens:
                    raise RuntimeError(
                        f"swishkernels: an activation folded into {', '.join(self.into)} received the output of "
                        f"the fused BatchNorm {bn_name}, whose own activation was folded elsewhere; the model "
                        "took a path the probing forward did not show. Undo with sk.unfuse_bn_swish(model)")
                if version != x._version:
                    raise RuntimeError(
                        f"swishkernels: the output of the fused BatchNorm {bn_name} was modified in place "
                        "before its activation ran, which the fused layer cannot reproduce (it applied the "
                        "activation first). Undo with sk.unfuse_bn_swish(model)")
                return x
            if x._base is not None and getattr(x._base, MARK, None) is not None:
                raise RuntimeError(
                    f"swishkernels: an activation folded into {', '.join(self.into)} received a view of a fused "
                    f"BatchNorm's output ({getattr(x._base, MARK)[2]}), which is already activated. Undo with "
                    "sk.unfuse_bn_swish(model)")
        return self.original(x)

    def __prepare_scriptable__(self):
        raise RuntimeError(SCRIPT_ERROR.format(what=f"an activation folded into {', '.join(self.into)}"))

    def extra_repr(self):
        return f"{self.kind} folded into {', '.join(self.into)}"


class FusedPair:
    """A fused BatchNorm's half of the pair (its `fused_pair` attribute): the token its outputs are marked
    with and the slot its activation was folded into. Holds the parent strongly (deepcopy and pickle copy
    the slot along with the model)."""

    def __init__(self, token: int, parent: nn.Module, name: str, bn_name: str):
        self.token, self.parent, self.name, self.bn_name = token, parent, name, bn_name

    def intact(self) -> bool:
        """True while the fused layer should apply the activation (never under torch.compile)."""
        if torch.compiler.is_compiling():
            return False
        slot = self.parent._modules.get(self.name)
        return type(slot) is FoldedActivation and self.token in slot.tokens

    def mark(self, output: torch.Tensor) -> None:
        setattr(output, MARK, (self.token, output._version, self.bn_name))


def folded_in(parent: nn.Module, name: str) -> Optional[FoldedActivation]:
    slot = parent._modules.get(name)
    return slot if type(slot) is FoldedActivation else None
