"""Recompute is exact whenever it is used: an output of a BatchNormSwish2d(recompute=True) that was modified
in place after the layer returned it (a residual `y += x`, torchvision's `result += input`, a write through a
view of it) is saved as the tensor, not recomputed from the pre-change recipe; a view of it is saved as the
view. Checked against the
unfused float64 model (gradients of every parameter, the input and outputs)."""
import copy

import pytest
import torch
import torch.nn as nn

import swishkernels as sk
from helpers import randn


class InPlaceResidual(nn.Module):
    """Conv -> BN -> SiLU, `y += x`, conv: the next conv saves the changed y for its weight gradient."""

    def __init__(self, channels=4):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.SiLU()
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        y = self.act(self.bn(self.conv1(x)))
        y += x
        return self.conv2(y)


class ViewedOutput(InPlaceResidual):
    """The fused output changed in place through a view of it (half its channels), then read by a conv."""

    def forward(self, x):
        y = self.act(self.bn(self.conv1(x)))
        y[:, :2] += x[:, :2]
        return self.conv2(y) + self.conv2(y[:, :, 1:])[:, :, :1].sum()


def torchvision_fused_mbconv():
    """torchvision's own EfficientNetV2 FusedMBConv (expand ratio 1: Conv-BN-SiLU, then `result += input`),
    followed by a conv that saves the block's output."""
    from torchvision.models.efficientnet import FusedMBConv, FusedMBConvConfig

    config = FusedMBConvConfig(1, 3, 1, 8, 8, 1)  # efficientnet_v2_s's first stage, 8 channels (its minimum)
    return nn.Sequential(FusedMBConv(config, stochastic_depth_prob=0.0, norm_layer=nn.BatchNorm2d),
                         nn.Conv2d(8, 8, 3, padding=1))


def gradients(model, x, recompute):
    x = x.clone().requires_grad_()
    if recompute:
        with sk.recompute_bn_swish():
            out = model(x)
    else:
        out = model(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    grads = [out.detach(), x.grad] + [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("build", [InPlaceResidual, ViewedOutput, torchvision_fused_mbconv],
                         ids=["inplace-residual", "view", "torchvision-FusedMBConv"])
def test_recompute_after_in_place_change_is_exact(build, gen):
    # One backend: the saved-tensor decision is the same Python code for all (the kernels are tested elsewhere).
    torch.manual_seed(0)
    model = build().double()
    channels = model[0].block[0][0].in_channels if isinstance(model, nn.Sequential) else 4
    fused = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused, recompute=True, example_inputs=torch.rand(2, channels, 6, 6, dtype=torch.float64))
    assert len(report.fused) == 1, str(report)
    x = randn(2, channels, 6, 6, dtype=torch.float64, gen=gen)
    expected = gradients(model, x, recompute=False)
    for got, want in zip(gradients(fused, x, recompute=True), expected):
        torch.testing.assert_close(got, want)


def test_recompute_still_keeps_unchanged_outputs_as_recipes(gen):
    """The exactness check does not cost the memory saving: an unchanged output is still recomputed."""
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.SiLU(), nn.Conv2d(4, 4, 1)).double()
    sk.fuse_bn_swish(model, recompute=True)
    x = randn(2, 4, 6, 6, dtype=torch.float64, gen=gen)
    kept = sk.saved_for_backward(model, x).bytes
    recomputed = sk.saved_for_backward(model, x, recompute=True).bytes
    assert recomputed == kept - x.numel() * x.element_size()  # one full-size tensor fewer


def test_block_input_changed_in_place_after_forward_raises(gen):
    """The hooks switch off autograd's own in-place check for saved tensors; the recipe checks its input."""
    conv, bn, conv2 = nn.Conv2d(4, 4, 1).double(), sk.BatchNormSwish2d(4, recompute=True).double(), \
        nn.Conv2d(4, 4, 1).double()
    x = randn(2, 4, 5, 5, dtype=torch.float64, gen=gen)
    with sk.recompute_bn_swish():
        z = conv(x)
        out = conv2(bn(z))
        z.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        out.sum().backward()
