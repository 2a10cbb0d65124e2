"""Which pairs fusion reaches: Swish recognised by behaviour under any class name (and look-alikes that
compute something else never taken for it), one activation instance shared by several call sites fused per
call, and training-only layers between a BatchNorm and its activation seen even when the model is fused in
eval mode. (The real classes, efficientnet-pytorch's, timm's, YOLOX's, are in tests/integrations.)"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import swishkernels as sk
from helpers import check_same_step, randn
from swishkernels.activation_kinds import activation_kind
from swishkernels.fusion import FoldedActivation


class MulSigmoid(nn.Module):  # the seed thread's Swish
    def forward(self, x):
        return x * torch.sigmoid(x)


class _SwishFunction(torch.autograd.Function):  # the seed thread's MemoryEfficientSwish
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1 + x * (1 - s))


class MemoryEfficientSwish(nn.Module):
    def forward(self, x):
        return _SwishFunction.apply(x)


class InplaceSwish(nn.Module):  # timm's Swish(inplace=True)
    def __init__(self, inplace=True):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return x.mul_(x.sigmoid()) if self.inplace else x.mul(x.sigmoid())


class StaticSiLU(nn.Module):  # YOLOX's export-friendly SiLU
    @staticmethod
    def forward(x):
        return x * torch.sigmoid(x)


class SiLUSubclass(nn.SiLU):
    pass


SWISHES = [MulSigmoid, MemoryEfficientSwish, InplaceSwish, StaticSiLU, SiLUSubclass]


class ScaledSwish(nn.Module):  # x * sigmoid(beta x) with a fixed beta: not Swish
    beta = 1.1

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


class TrainableSwish(nn.Module):  # has a parameter: fusion would drop it
    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


class _WrongGradient(_SwishFunction):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)  # forgets the x * s * (1 - s) term


class WrongBackwardSwish(nn.Module):
    def forward(self, x):
        return _WrongGradient.apply(x)


class HardSwishLike(nn.Module):
    def forward(self, x):
        return x * F.relu6(x + 3) / 6


LOOK_ALIKES = [ScaledSwish, TrainableSwish, WrongBackwardSwish, HardSwishLike]


def conv_bn_act(act, channels=4):
    return nn.Sequential(nn.Conv2d(3, channels, 1), nn.BatchNorm2d(channels), act, nn.Conv2d(channels, 2, 1)).double()


@pytest.mark.parametrize("act_class", SWISHES, ids=lambda c: c.__name__)
def test_swish_under_any_class_name_is_fused_and_named(act_class, gen):
    model = conv_bn_act(act_class())
    fused = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused)
    assert report.fused == ("1",), str(report)
    assert (f"{act_class.__module__}.{act_class.__qualname__}", "swish") in report.recognised
    assert act_class.__name__ in str(report)
    check_same_step(model, fused, randn(2, 3, 5, 5, dtype=torch.float64, gen=gen))
    plain = copy.deepcopy(model)
    assert sk.replace_activations(plain) == 1 and type(plain[2]) is sk.Swish


@pytest.mark.parametrize("act_class", LOOK_ALIKES, ids=lambda c: c.__name__)
def test_look_alikes_are_never_fused_or_replaced(act_class):
    assert activation_kind(act_class()) is None
    model = conv_bn_act(act_class())
    report = sk.fuse_bn_swish(model)
    assert not report.fused and not report.recognised
    assert sk.replace_activations(model) == 0 and type(model[2]) is act_class


def test_mish_is_recognised_by_behaviour_too():
    class MishLike(nn.Module):
        def forward(self, x):
            return x * torch.tanh(F.softplus(x))

    assert activation_kind(MishLike()) == "mish" and activation_kind(nn.Mish()) == "mish"
    model = nn.Sequential(MishLike())
    assert sk.replace_activations(nn.Sequential(model)) == 1 and type(model[0]) is sk.Mish


class SharedSwishBlock(nn.Module):
    """EfficientNet-PyTorch's MBConvBlock: one `_swish` after bn0, after bn1, and on the squeeze-excitation's
    conv output (no BatchNorm there)."""

    def __init__(self, swish, channels=4):
        super().__init__()
        self._expand_conv = nn.Conv2d(channels, 2 * channels, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(2 * channels)
        self._depthwise_conv = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels, bias=False)
        self._bn1 = nn.BatchNorm2d(2 * channels)
        self._se_reduce = nn.Conv2d(2 * channels, 2, 1)
        self._se_expand = nn.Conv2d(2, 2 * channels, 1)
        self._project_conv = nn.Conv2d(2 * channels, channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(channels)
        self._swish = swish

    def forward(self, inputs):
        x = self._swish(self._bn0(self._expand_conv(inputs)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        squeezed = self._se_expand(self._swish(self._se_reduce(F.adaptive_avg_pool2d(x, 1))))
        x = torch.sigmoid(squeezed) * x
        return self._bn2(self._project_conv(x)) + inputs


@pytest.mark.parametrize("swish", [nn.SiLU, MemoryEfficientSwish], ids=["SiLU", "MemoryEfficientSwish"])
def test_one_activation_shared_by_several_calls_is_fused_per_call(swish, gen):
    shared = swish()
    model = nn.Sequential(SharedSwishBlock(shared), SharedSwishBlock(shared)).double()
    fused = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused, recompute=True)
    assert report.fused == ("0._bn0", "0._bn1", "1._bn0", "1._bn1"), str(report)
    assert fused[0]._swish is not fused[1]._swish and isinstance(fused[0]._swish, FoldedActivation)
    x = randn(2, 4, 6, 6, dtype=torch.float64, gen=gen)
    check_same_step(model, fused, x)
    with sk.recompute_bn_swish():
        check_same_step(model, fused, x)
    assert sk.unfuse_bn_swish(fused) == 4 and fused[0]._swish is fused[1]._swish  # shared again


class DropInTraining(nn.Module):
    """DropBlock's shape: the identity in eval mode, a random mask in training."""

    def forward(self, x):
        if not self.training:
            return x
        return x * (torch.rand_like(x) > 0.3) / 0.7


def test_training_only_layer_between_the_pair_is_seen_in_eval_mode(gen):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), DropInTraining(), nn.SiLU()).double().eval()
    report = sk.fuse_bn_swish(model)
    assert not report.fused and "goes to: rand_like in 2, mul in 2" in report.skipped[0].reason, str(report)
    assert not model.training and not model[2].training  # the probe's training mode was put back


class MishLike(nn.Module):  # yolov5's / timm's Mish: x * tanh(softplus(x)) under another name
    def forward(self, x):
        return x * F.softplus(x).tanh()


@pytest.mark.parametrize("mish", [nn.Mish, MishLike], ids=["nn.Mish", "MishLike"])
def test_mish_pairs_are_fused_into_batchnorm_mish(mish, gen):
    """Conv-BN-Mish (YOLOv4's CSPDarknet block): BatchNormMish2d, the same numbers (recompute too), less saved
    for backward than Conv-BN-LeakyReLU(inplace); a shared Mish and a folded BatchNorm keep the math."""
    shared = mish()
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), shared,
                          nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), shared, nn.Conv2d(4, 2, 1)).double()
    fused = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused, recompute=True)
    assert report.fused == ("1", "4") and isinstance(fused[1], sk.BatchNormMish2d), str(report)
    assert isinstance(fused[2], FoldedActivation) and fused[2].kind == "mish"
    x = randn(2, 3, 6, 6, dtype=torch.float64, gen=gen)
    check_same_step(model, fused, x)
    with sk.recompute_bn_swish():
        check_same_step(model, fused, x)
    leaky = copy.deepcopy(model)
    leaky[2] = leaky[5] = nn.LeakyReLU(0.1, inplace=True)
    assert sk.saved_for_backward(fused, x).bytes <= sk.saved_for_backward(leaky, x).bytes
    with torch.no_grad():  # the BatchNorm folded away (yolov5 style): the Mish must be applied by its slot
        model.eval(), fused.eval()
        expected = model[3](model[2](model[1](model[0](x))))
        fused[1] = nn.Identity()
        fused[0] = torch.nn.utils.fusion.fuse_conv_bn_eval(fused[0], model[1])
        torch.testing.assert_close(fused[3](fused[2](fused[1](fused[0](x)))), expected)
