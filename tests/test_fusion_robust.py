"""A fused pair stays BatchNorm-then-activation whatever touches one of its two modules (fused_pair.py):
module swaps, conv+BN folding in the style of yolov5/YOLOX `fuse()`, SyncBatchNorm conversion (torch and
timm), `torch.ao.quantization.fuse_modules`, pickling, TorchScript, torch.compile, torch.fx; and where the
math cannot be kept, one error names what happened. (The real frameworks' own fuse() are in
tests/integrations/test_more_models.py.)"""
import copy
import io
import warnings

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch.nn as nn

import swishkernels as sk
from helpers import check_same_step, randn
from swishkernels.fusion import FoldedActivation


class Block(nn.Module):
    """ultralytics / yolov5 / YOLOX `Conv`: conv, bn and act called by attribute."""

    def __init__(self, channels=4, act=None):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.SiLU() if act is None else act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))


def make_model(gen):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), Block(), Block(), nn.Conv2d(4, 2, 1)).double()
    with torch.no_grad():  # random running statistics and affine parameters, so eval mode is not trivial
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(randn(4, gen=gen, scale=1.0))
                m.bias.copy_(randn(4, gen=gen, scale=1.0))
                m.running_mean.copy_(randn(4, gen=gen, scale=0.5))
                m.running_var.copy_(randn(4, gen=gen).abs() + 0.5)
    return model


def fused_copy(model, **kwargs):
    fused = copy.deepcopy(model)
    assert fused_names(fused, **kwargs) == ("1.bn", "2.bn")
    return fused


def fused_names(model, **kwargs):
    return sk.fuse_bn_swish(model, example_inputs=torch.rand(2, 3, 6, 6, dtype=torch.float64), **kwargs).fused


def test_batchnorm_swapped_out_keeps_the_activation(gen):
    model = make_model(gen)
    fused = fused_copy(model)
    fused[1].bn = copy.deepcopy(model[1].bn)  # a plain BatchNorm back in the BatchNorm's place
    check_same_step(model, fused, randn(2, 3, 6, 6, dtype=torch.float64, gen=gen))


def test_activation_swapped_out_leaves_a_plain_batchnorm(gen):
    model = make_model(gen)
    fused = fused_copy(model)
    model[2].act, fused[2].act = nn.ReLU(), nn.ReLU()
    check_same_step(model, fused, randn(2, 3, 6, 6, dtype=torch.float64, gen=gen))
    sk.replace_activations(fused)  # leaves the pass-throughs alone: nothing to change in the math
    assert isinstance(fused[1].act, FoldedActivation)


def test_conv_bn_folding_in_the_style_of_yolov5_and_yolox(gen):
    """Model.fuse() of yolov5 / fuse_model() of YOLOX: the BatchNorm folded into the conv and deleted, then
    act(conv(x)). The folded activation gets the conv's output: it must apply the SiLU."""
    def fold(model):
        for block in (model[1], model[2]):
            block.conv = torch.nn.utils.fusion.fuse_conv_bn_eval(block.conv, block.bn)
            del block.bn
            block.forward = block.forward_fuse
        return model

    model = make_model(gen).eval()
    x = randn(2, 3, 6, 6, dtype=torch.float64, gen=gen)
    with torch.no_grad():
        expected = fold(copy.deepcopy(model))(x)
        got = fold(fused_copy(model))(x)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(got, model(x))


@pytest.mark.parametrize("converter", ["torch", "timm"])
def test_sync_batchnorm_conversion_keeps_the_activation(converter, gen):
    """convert_sync_batchnorm puts a new, plain SyncBatchNorm in each BatchNorm's place (same Parameters).
    SyncBatchNorm refuses CPU tensors in training, so the math is checked in eval mode."""
    if converter == "timm":
        from timm.layers import convert_sync_batchnorm
    else:
        convert_sync_batchnorm = nn.SyncBatchNorm.convert_sync_batchnorm
    model = make_model(gen)
    fused = fused_copy(model)
    converted = convert_sync_batchnorm(fused).eval()
    assert not any(isinstance(m, sk.BatchNormSwish2d) for m in converted.modules())
    x = randn(2, 3, 6, 6, dtype=torch.float64, gen=gen)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), convert_sync_batchnorm(copy.deepcopy(model)).eval()(x))
        torch.testing.assert_close(converted(x), model.eval()(x))


def test_converted_to_sync_batchnorm_then_fused_again(gen):
    """After torch's conversion the folded activations are still in their slots: fusing again pairs each new
    nn.SyncBatchNorm with the same FoldedActivation (SyncBatchNormSwish2d; no process group here: local)."""
    model = make_model(gen)
    fused = nn.SyncBatchNorm.convert_sync_batchnorm(fused_copy(model))
    folded = fused[1].act
    assert fused_names(fused) == ("1.bn", "2.bn")
    assert isinstance(fused[1].bn, sk.SyncBatchNormSwish2d) and fused[1].act is folded
    check_same_step(model, fused, randn(2, 3, 6, 6, dtype=torch.float64, gen=gen))


def test_quantization_fuse_modules_names_the_fused_layer(gen):
    from torch.ao.quantization import fuse_modules

    fused = fused_copy(make_model(gen)).eval()
    with pytest.raises(AssertionError, match="BatchNormSwish2d"):
        fuse_modules(fused, [["1.conv", "1.bn"]])
    sk.unfuse_bn_swish(fused)
    fuse_modules(fused, [["1.conv", "1.bn"]], inplace=True)  # what the README says to do first


def test_pickled_model_loads_back_fused_and_exact(gen):
    model = make_model(gen)
    fused = fused_copy(model, recompute=True)
    buffer = io.BytesIO()
    torch.save(fused, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert isinstance(loaded[1].bn, sk.BatchNormSwish2d) and isinstance(loaded[1].act, FoldedActivation)
    assert loaded[1].bn.fused_pair.parent is loaded[1]  # the copy's pair points into the copy
    check_same_step(model, loaded, randn(2, 3, 6, 6, dtype=torch.float64, gen=gen))
    assert sk.unfuse_bn_swish(loaded) == 2 and type(loaded[1].act) is nn.SiLU


def test_torchscript_says_what_to_do_instead(gen):
    warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 calls TorchScript deprecated (pytest restores)
    model = make_model(gen)
    for target in (fused_copy(model), sk.BatchNormSwish2d(4)):
        with pytest.raises(RuntimeError, match="torch.jit.script cannot compile") as error:
            torch.jit.script(target)
        assert "\n" not in str(error.value) and "torch.jit.trace" in str(error.value)
    scripted = torch.jit.script(unfused(fused_copy(model)))  # the alternative the message names
    x = randn(2, 3, 6, 6, dtype=torch.float64, gen=gen)
    torch.testing.assert_close(scripted(x), model(x))


def unfused(model):
    plain = copy.deepcopy(model)
    sk.unfuse_bn_swish(plain)
    return plain


class SometimesModified(Block):
    """A BatchNorm whose output is changed in place or viewed before the SiLU, on a path the probe did not
    take."""
    modify = None

    def forward(self, x):
        z = self.bn(self.conv(x))
        if self.modify == "inplace":
            z.add_(1.0)
        elif self.modify == "view":
            z = z[:, :2]
        return self.act(z)


@pytest.mark.parametrize("modify", ["inplace", "view"])
def test_change_between_the_pair_on_an_unseen_path_raises(modify, gen):
    model = SometimesModified().double()
    assert sk.fuse_bn_swish(model, example_inputs=torch.rand(2, 4, 5, 5, dtype=torch.float64)).fused == ("bn",)
    model.modify = modify
    match = "modified in place" if modify == "inplace" else "a view of a fused BatchNorm's output"
    with pytest.raises(RuntimeError, match=match):
        model(randn(2, 4, 5, 5, dtype=torch.float64, gen=gen))


def test_compile_fullgraph_with_recompute_matches_eager(gen):
    """No graph break (fullgraph, one frame) with recompute on, by the context and by the forward hooks;
    numbers and gradients equal to the unfused eager model's. Under compile a pair is BatchNorm + activation
    for the compiler to fuse and recompute (aot_eager here: the graph capture, not the code generation)."""
    torch._dynamo.reset()
    model = make_model(gen)
    fused = fused_copy(model, recompute=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fused, fullgraph=True, backend=counter)
    x = randn(2, 3, 6, 6, dtype=torch.float64, gen=gen)
    with sk.recompute_bn_swish():
        check_same_step(model, compiled, x)
    model.zero_grad()
    fused.zero_grad()
    handles = sk.recompute_in_forward(fused)
    check_same_step(model, compiled, x)
    for handle in handles:
        handle.remove()
    assert counter.frame_count == 1


def test_compiling_a_fused_model_leaves_other_compiled_models_alone(gen):
    """Nothing of ours is marked skipped or disabled for dynamo: a plain model and a BatchNormSwish2d
    compiled after a fused one still compile whole (one frame, their BatchNorm in the graph)."""
    torch._dynamo.reset()
    fused = fused_copy(make_model(gen))
    torch.compile(fused, fullgraph=True, backend="eager")(randn(2, 3, 6, 6, dtype=torch.float64, gen=gen))
    for other in (make_model(gen), nn.Sequential(nn.Conv2d(3, 4, 1), sk.BatchNormSwish2d(4)).double()):
        counter = torch._dynamo.testing.CompileCounter()
        compiled = torch.compile(other, fullgraph=True, backend=counter)
        x = randn(2, 3, 6, 6, dtype=torch.float64, gen=gen)
        torch.testing.assert_close(compiled(x), other(x))
        assert counter.frame_count == 1 and counter.op_count >= 3


def test_fx_graph_module_fuses_or_says_why(gen):
    flat = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.SiLU(), nn.Conv2d(4, 2, 1)).double()
    traced = torch.fx.symbolic_trace(copy.deepcopy(flat))
    assert sk.fuse_bn_swish(traced).fused == ("1",)  # generated code calls self.2 through the slot folded
    check_same_step(flat, traced, randn(2, 3, 6, 6, dtype=torch.float64, gen=gen))
    nested = torch.fx.symbolic_trace(make_model(gen))
    report = sk.fuse_bn_swish(nested)
    assert not report.fused and all("torch.fx" in s.reason for s in report.skipped), str(report)


def test_not_a_module_is_a_type_error():
    with pytest.raises(TypeError, match="expected an nn.Module, got str"):
        sk.fuse_bn_swish("x")
