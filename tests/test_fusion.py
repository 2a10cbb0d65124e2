"""fuse_bn_swish's pair finding and rewriting on hand-built structures (the real frameworks' models are in
tests/integrations): what it must fuse, what it must leave alone (and say why), what it must keep."""
import copy

import pytest
import torch
import torch.nn as nn

import swishkernels as sk
from helpers import check_same_step, randn
from swishkernels.fusion import FoldedSwish


def conv_bn(channels=4):
    return [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)]


class AttributeBlock(nn.Module):
    """ultralytics' Conv pattern: bn and act called by attribute, act possibly shared."""

    def __init__(self, act, channels=4):
        super().__init__()
        self.conv, self.bn = conv_bn(channels)
        self.act = act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class UsesBnOutputTwice(nn.Sequential):
    """A Sequential subclass whose own forward adds the BatchNorm output to the Swish output."""

    def forward(self, x):
        z = self[1](self[0](x))
        return self[2](z) + z


class ReturnsBnOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = conv_bn()
        self.act = nn.SiLU()
        self.cache = None

    def forward(self, x):
        z = self.bn(self.conv(x))
        self.cache = z
        return self.act(z)


def test_attribute_blocks_sharing_one_silu(gen):
    shared = nn.SiLU()
    model = nn.Sequential(nn.Conv2d(3, 4, 1), AttributeBlock(shared), AttributeBlock(shared)).double()
    fused = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused)
    assert report.fused == ("1.bn", "2.bn") and not report.skipped
    assert isinstance(fused[1].act, FoldedSwish) and isinstance(fused[2].act, FoldedSwish)
    check_same_step(model, fused, randn(2, 3, 8, 8, gen=gen, dtype=torch.float64))
    assert "fused    1.bn" in str(report)


def test_one_silu_twice_in_a_sequential(gen):
    act = nn.SiLU()
    model = nn.Sequential(*conv_bn(), act, *conv_bn(), act).double()
    fused = copy.deepcopy(model)
    assert len(sk.fuse_bn_swish(fused, example_inputs=randn(2, 4, 6, 6, gen=gen, dtype=torch.float64)).fused) == 2
    check_same_step(model, fused, randn(2, 4, 6, 6, gen=gen, dtype=torch.float64))


def test_sequential_subclass_using_bn_output_twice_is_left_alone(gen):
    model = UsesBnOutputTwice(*conv_bn(), nn.SiLU()).double()
    fused = copy.deepcopy(model)
    report = sk.fuse_bn_swish(fused)
    assert not report.fused
    assert "also used by add" in report.skipped[0].reason
    check_same_step(model, fused, randn(2, 4, 6, 6, gen=gen, dtype=torch.float64))


def test_shared_batchnorm_stays_shared_and_unfused(gen):
    conv, bn = conv_bn()
    model = nn.Sequential(conv, bn, nn.SiLU(), nn.Conv2d(4, 4, 1), bn).double()
    report = sk.fuse_bn_swish(model)
    assert not report.fused and "runs 2 times" in report.skipped[0].reason
    assert model[1] is model[4] and type(model[1]) is nn.BatchNorm2d


def test_batchnorm_with_hooks_is_left_alone():
    model = nn.Sequential(*conv_bn(), nn.SiLU())
    seen = []
    model[1].register_forward_hook(lambda m, a, out: seen.append(out.shape))
    report = sk.fuse_bn_swish(model)
    assert not report.fused and "hooks" in report.skipped[0].reason
    assert type(model[1]) is nn.BatchNorm2d and len(model[1]._forward_hooks) == 1


def test_other_activations_and_kept_outputs_are_left_alone():
    for act in (nn.ReLU(), nn.LeakyReLU(0.1), nn.Hardswish(), nn.GELU()):
        report = sk.fuse_bn_swish(nn.Sequential(*conv_bn(), act))
        assert not report.fused and "not followed by a Swish" in report.skipped[0].reason
    model = ReturnsBnOutput()
    report = sk.fuse_bn_swish(model)
    assert not report.fused and "kept after the forward" in report.skipped[0].reason
    returned = nn.Sequential(*conv_bn())
    assert "returned by the model" in sk.fuse_bn_swish(returned).skipped[0].reason


def test_same_parameters_buffers_and_state_dict(gen):
    model = nn.Sequential(*conv_bn(), sk.Swish(), *conv_bn(), nn.SiLU(inplace=True))
    params = [id(p) for p in model.parameters()]
    buffers = [id(b) for b in model.buffers()]
    keys = list(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    bn = model[1]
    assert len(sk.fuse_bn_swish(model).fused) == 2
    assert model[1] is bn and isinstance(bn, sk.BatchNormSwish2d)
    assert [id(p) for p in model.parameters()] == params and [id(b) for b in model.buffers()] == buffers
    assert list(model.state_dict()) == keys
    model.load_state_dict(copy.deepcopy(model.state_dict()), strict=True)
    weight = bn.weight.detach().clone()
    model(randn(2, 4, 5, 5, gen=gen)).square().sum().backward()
    optimizer.step()
    assert not torch.equal(bn.weight, weight)
    assert bn.running_mean.abs().sum() > 0  # the fused module updated the shared buffer


def test_unfuse_restores_the_original_modules(gen):
    shared = nn.SiLU()
    model = nn.Sequential(nn.Conv2d(3, 4, 1), AttributeBlock(shared), AttributeBlock(shared))
    plain = copy.deepcopy(model)
    assert len(sk.fuse_bn_swish(model, recompute=True, backend="reference").fused) == 2
    assert sk.unfuse_bn_swish(model) == 2
    assert model[1].act is shared and model[2].act is shared
    assert type(model[1].bn) is nn.BatchNorm2d and not hasattr(model[1].bn, "recompute")
    x = randn(2, 3, 6, 6, gen=gen)
    torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)
    assert sk.unfuse_bn_swish(model) == 0


def test_second_fusion_finds_nothing_new():
    model = nn.Sequential(*conv_bn(), nn.SiLU())
    assert len(sk.fuse_bn_swish(model).fused) == 1
    assert not sk.fuse_bn_swish(model).fused


def test_errors_name_the_problem():
    class NeedsTwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = conv_bn()
            self.act = nn.SiLU()

        def forward(self, x, y):
            return self.act(self.bn(self.conv(x + y)))

    with pytest.raises(RuntimeError, match="example_inputs"):
        sk.fuse_bn_swish(NeedsTwoInputs())
    model = NeedsTwoInputs()
    assert len(sk.fuse_bn_swish(model, example_inputs=(torch.rand(2, 4, 5, 5), torch.rand(2, 4, 5, 5))).fused) == 1
    with pytest.raises(ValueError, match="the model itself"):
        sk.fuse_bn_swish(nn.BatchNorm2d(3))


def test_probing_forward_leaves_no_trace(gen):
    model = nn.Sequential(*conv_bn(), nn.SiLU(), nn.Dropout(0.5), *conv_bn(), nn.ReLU())
    state = copy.deepcopy(model.state_dict())
    torch.manual_seed(3)
    expected_draw = torch.rand(3)
    torch.manual_seed(3)
    sk.fuse_bn_swish(model)
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG stream is where it was
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_replace_activations_counts_every_reference():
    shared = nn.SiLU()
    model = nn.Sequential(AttributeBlock(shared), AttributeBlock(shared), nn.SiLU(), nn.Mish())
    assert sk.replace_activations(model) == 4
    assert model[0].act is model[1].act and isinstance(model[0].act, sk.Swish)  # still one shared instance
    assert not any(type(m) in (nn.SiLU, nn.Mish) for m in model.modules())


def test_core_never_imports_the_frameworks():
    """ultralytics, timm and torchvision are loaded only for a model that holds their modules."""
    import subprocess
    import sys

    script = ("import sys, torch.nn as nn, swishkernels as sk\n"
              "sk.fuse_bn_swish(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.SiLU()))\n"
              "print(sorted(m for m in ('ultralytics', 'timm', 'torchvision') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
