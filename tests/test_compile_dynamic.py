"""torch.compile(dynamic=True) of the activations: changing batch and spatial sizes compile once
(one frame, no recompiles) and match eager, in training (with backward) and in eval.
(BatchNormSwish2d is not covered here: see the report of issue 11, it recompiles per shape.)"""
import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch.nn as nn

import swishkernels as sk
from conftest import randn

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
