"""torch.compile(dynamic=True) of the activations and of BatchNormSwish2d: changing batch and spatial
sizes compile once (one frame, no recompiles) and match eager (BatchNormSwish2d: nn.BatchNorm2d +
nn.SiLU), in training (with backward) and in eval."""
import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch.nn as nn

import swishkernels as sk
from helpers import randn

SHAPES = [(2, 3, 5, 6), (3, 3, 7, 4), (5, 3, 9, 9), (4, 3, 6, 11)]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("activation", [sk.Swish, sk.Mish], ids=["swish", "mish"])
def test_dynamic_shapes_compile_once(backend, activation, training, gen):
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(3, 4, 1), activation(backend=backend)).train(training)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, dynamic=True, backend=counter)
    for shape in SHAPES:
        x = randn(*shape, gen=gen).requires_grad_(training)
        got, expected = compiled(x), model(x)
        torch.testing.assert_close(got, expected)
        if training:
            weights = randn(*got.shape, gen=gen)
            grads = torch.autograd.grad((got * weights).sum(), [x, model[0].weight])
            expected_grads = torch.autograd.grad((expected * weights).sum(), [x, model[0].weight])
            torch.testing.assert_close(grads, expected_grads)
    assert counter.frame_count == 1


def _bn_swish_and_peer(backend, training, gen):
    """Conv + BatchNormSwish2d, and the same weights in Conv + nn.BatchNorm2d + nn.SiLU."""
    conv = nn.Conv2d(3, 4, 1)
    fused = sk.BatchNormSwish2d(4, backend=backend)
    with torch.no_grad():  # random affine parameters and running statistics, never the defaults
        fused.weight.copy_(randn(4, gen=gen, scale=1.0))
        fused.bias.copy_(randn(4, gen=gen, scale=1.0))
        fused.running_mean.copy_(randn(4, gen=gen, scale=0.5))
        fused.running_var.copy_(randn(4, gen=gen, scale=1.0).abs() + 0.5)
    peer_bn = nn.BatchNorm2d(4)
    peer_bn.load_state_dict(fused.state_dict())
    peer_conv = nn.Conv2d(3, 4, 1)
    peer_conv.load_state_dict(conv.state_dict())
    # fp64: the fused backward sums in another order than PyTorch's, and in fp32 the conv weight
    # gradient (a sum over every position) then differs by a few ulp, beyond the default tolerances.
    model = nn.Sequential(conv, fused).train(training).double()
    peer = nn.Sequential(peer_conv, peer_bn, nn.SiLU()).train(training).double()
    return model, peer


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_swish_dynamic_shapes_compile_once(backend, training, gen):
    # The first call compiles one graph with symbolic batch and spatial sizes (fullgraph: no graph
    # break), and the other shapes reuse it: no recompile. (Batches stay below 16: PyTorch's conv
    # itself guards on batch < 16.) Numbers, gradients and running statistics are the eager
    # nn.BatchNorm2d + nn.SiLU ones at every step.
    torch._dynamo.reset()
    model, peer = _bn_swish_and_peer(backend, training, gen)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, dynamic=True, fullgraph=True, backend=counter)
    frames_after_first_call = None
    for shape in SHAPES:
        x = randn(*shape, dtype=torch.float64, gen=gen).requires_grad_(training)
        got, expected = compiled(x), peer(x)
        frames_after_first_call = frames_after_first_call or counter.frame_count
        torch.testing.assert_close(got, expected)
        if training:
            weights = randn(*got.shape, dtype=torch.float64, gen=gen)
            params = [x, model[0].weight, model[1].weight, model[1].bias]
            peer_params = [x, peer[0].weight, peer[1].weight, peer[1].bias]
            grads = torch.autograd.grad((got * weights).sum(), params)
            torch.testing.assert_close(grads, torch.autograd.grad((expected * weights).sum(), peer_params))
        torch.testing.assert_close(model[1].state_dict(), peer[1].state_dict())
    assert frames_after_first_call >= 1
    assert counter.frame_count == frames_after_first_call
