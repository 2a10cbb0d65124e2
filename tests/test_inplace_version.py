"""In-place forms record their mutation like ATen's in-place ops: the version counter of the tensor
(and of every view sharing its storage) goes up, so backward through an op that saved the tensor
before it was overwritten raises instead of silently using the new values."""
import pytest
import torch
import torch.nn.functional as F

import swishkernels as sk
from helpers import randn

MODULES = {"swish": sk.Swish, "mish": sk.Mish}
PEERS = {"swish": F.silu, "mish": F.mish}
PEER_MODULES = {"swish": torch.nn.SiLU, "mish": torch.nn.Mish}


@pytest.mark.parametrize("through_view", [False, True], ids=["tensor", "view"])
@pytest.mark.parametrize("activation", ["swish", "mish"])
@pytest.mark.parametrize("ours", [True, False], ids=["ours", "pytorch"])
def test_overwriting_a_saved_tensor_makes_backward_raise(backend, activation, through_view, ours, gen):
    """`pytorch` is the control: nn.SiLU/nn.Mish(inplace=True) raise the same way."""
    w = randn(8, gen=gen).requires_grad_()
    x = randn(8, gen=gen)
    loss = (w * x).sum()  # mul saves x for w's gradient
    target = x[2:6] if through_view else x
    expected = PEERS[activation](target)
    version = x._version
    module = MODULES[activation](inplace=True, backend=backend) if ours else PEER_MODULES[activation](inplace=True)
    with torch.no_grad():
        module(target)
    torch.testing.assert_close(target, expected)  # really written, in place
    assert x._version > version and target._version == x._version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("activation", ["swish", "mish"])
def test_the_inplace_op_itself_bumps_the_version(backend, activation, gen):
    """The op itself (not only the module) records the mutation, on the base and on a view."""
    from swishkernels import ops
    op = ops.get(backend, activation).forward_inplace
    x = randn(3, 4, gen=gen)
    view = x[:, 1:3]
    before = x._version
    op(view)  # a non-dense view: computed in a copy and written back
    after_view = x._version
    op(x)
    assert before < after_view < x._version


def test_inference_mode_inplace_works_without_version_counter(backend, gen):
    with torch.inference_mode():
        x = randn(5, gen=gen)
        expected = F.silu(x)
        sk.Swish(inplace=True, backend=backend)(x)
    torch.testing.assert_close(x, expected)
