"""fuse_bn_swish on more models users train, and their own tools run on the fused model: every pair found
(counted by hooks, independently of swishkernels), the same numbers in float64 (outputs, input and parameter
gradients, running statistics), and the frameworks' inference folding (yolov5 `Model.fuse()`, YOLOX
`fuse_model()`), EfficientNet-PyTorch's `set_swish` and timm's DropBlock keep the model's math."""
import copy

import pytest
import torch

import swishkernels as sk

from .models import count_bn_silu_pairs, flat_outputs
from .more_models import MORE, build_more, more_inputs, swish_types
from .test_real_models import FP64_RTOL, relative_error


def run_step(model, inputs, seed=0):
    """test_real_models.run_step for models with several forward arguments (the first is the image)."""
    x = inputs[0].clone().requires_grad_()
    torch.manual_seed(seed)
    outputs = flat_outputs(model(x, *inputs[1:]))
    sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum()
        for o in outputs if o.requires_grad).backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    buffers = [b.detach().clone() for b in model.buffers() if b.dtype.is_floating_point]
    model.zero_grad(set_to_none=True)
    return [o.detach() for o in outputs] + [x.grad] + grads + buffers


# Recompute is checked where the model is quick in float64 (the larger two cost a minute of CI each).
RECOMPUTE_CHECKED = ("yolov5n", "yolox-nano", "efficientnet-pytorch-b0")


@pytest.mark.parametrize("name", list(MORE))
def test_every_pair_fused_with_unchanged_numbers(name):
    model = build_more(name)
    inputs = more_inputs(name)
    pairs = count_bn_silu_pairs(model, inputs, swish_types())
    assert pairs > 0
    fused = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused, recompute=True, example_inputs=inputs)
    assert len(report.fused) == pairs, str(report)
    recomputing = copy.deepcopy(fused)  # a step updates the running statistics: each model takes one
    expected = run_step(model, inputs)
    got = run_step(fused, inputs)
    assert relative_error(got, expected) <= FP64_RTOL
    if name not in RECOMPUTE_CHECKED:
        return
    with sk.recompute_bn_swish():
        recomputed = run_step(recomputing, inputs)
    assert relative_error(recomputed, expected) <= FP64_RTOL


def test_efficientnet_pytorch_all_33_pairs_named_and_set_swish_after_fusion():
    """The seed thread's MemoryEfficientSwish, one `_swish` per block used three times (bn0, bn1, the
    squeeze-excitation); `set_swish` swaps every `_swish` afterwards, and the model must stay right."""
    model = build_more("efficientnet-pytorch-b0")
    inputs = more_inputs("efficientnet-pytorch-b0")
    fused = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused, example_inputs=inputs)
    assert len(report.fused) == 33
    assert report.recognised == (("efficientnet_pytorch.utils.MemoryEfficientSwish", "swish"),)
    fused.set_swish(memory_efficient=False)
    model.set_swish(memory_efficient=False)
    assert relative_error(run_step(fused, inputs), run_step(model, inputs)) <= FP64_RTOL


def _yolov5_fuse(model):
    return model.fuse()


def _yolox_fuse(model):
    from yolox.utils import fuse_model

    return fuse_model(model)


@pytest.mark.parametrize("name, fold", [("yolov5n", _yolov5_fuse), ("yolox-nano", _yolox_fuse)],
                         ids=["yolov5-Model.fuse", "yolox-fuse_model"])
def test_framework_inference_folding_keeps_the_activation(name, fold):
    """Their fuse() folds each BatchNorm into its conv, deletes it and then computes act(conv(x)). (float32:
    their folding makes float32 convolutions.) Folded, the fused model runs the very ops of the folded
    unfused one: bit-identical outputs."""
    model = build_more(name, torch.float32).eval()
    inputs = more_inputs(name, torch.float32)
    fused = copy.deepcopy(model)
    assert sk.fuse_bn_swish(fused, example_inputs=inputs).fused
    with torch.no_grad():
        expected = flat_outputs(model(inputs[0]))
        folded_reference = flat_outputs(fold(copy.deepcopy(model))(inputs[0]))
        folded = flat_outputs(fold(fused)(inputs[0]))
    assert not any(isinstance(m, sk.BatchNormSwish2d) for m in fused.modules())
    assert len(folded) == len(folded_reference) == len(expected)
    for a, b, c in zip(folded, folded_reference, expected):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)  # folding BN into the conv rounds in fp32


def test_timm_drop_block_between_batchnorm_and_activation_is_not_fused_across():
    """timm resnet with drop_block_rate: DropBlock2d sits between bn and act, acting only in training.
    Fused in eval mode, the model must still train exactly as the unfused one."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", act_layer="silu", drop_block_rate=0.2).double().eval()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fused = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused, example_inputs=x)
    assert any("DropBlock" in s.reason or "drop_block" in s.reason for s in report.skipped), str(report)
    model.train()
    fused.train()
    assert relative_error(run_step(fused, (x,)), run_step(model, (x,))) <= FP64_RTOL


def _real_activation_classes():
    from efficientnet_pytorch.utils import MemoryEfficientSwish, Swish
    from timm.layers import activations, activations_me
    from yolox.models.network_blocks import SiLU as YoloxSiLU

    from .more_models import _yolov5_model_class

    _yolov5_model_class()  # yolov5's imports work from here on
    from yolov5.utils import activations as yolov5_activations

    swishes = [MemoryEfficientSwish(), Swish(), activations.Swish(), activations.Swish(inplace=True),
               activations_me.SwishMe(), YoloxSiLU(), yolov5_activations.SiLU()]
    mishes = [activations.Mish(), activations_me.MishMe(), yolov5_activations.Mish(),
              yolov5_activations.MemoryEfficientMish()]
    others = [activations.HardSwish(), activations_me.HardSwishMe(), activations_me.HardMishMe(),
              yolov5_activations.Hardswish(), yolov5_activations.FReLU(4), yolov5_activations.AconC(4)]
    return swishes, mishes, others


def test_the_frameworks_swish_and_mish_classes_are_recognised_and_their_look_alikes_not():
    from swishkernels.activation_kinds import activation_kind

    swishes, mishes, others = _real_activation_classes()
    assert [activation_kind(m) for m in swishes] == ["swish"] * len(swishes)
    assert [activation_kind(m) for m in mishes] == ["mish"] * len(mishes)
    assert [activation_kind(m) for m in others] == [None] * len(others)
    model = torch.nn.Sequential(*swishes, *mishes, *others)
    assert sk.replace_activations(model) == len(swishes) + len(mishes)
    assert [type(m) for m in model[:len(swishes) + len(mishes)]] == [sk.Swish] * len(swishes) + [sk.Mish] * len(mishes)
