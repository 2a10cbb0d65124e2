"""torch.compile of fused models: BatchNormSwish2d runs PyTorch's batch_norm + silu while compiling, so
Inductor fuses and partitions it like the unfused model (it keeps exactly what compile alone keeps), with
recompute on (recompute_in_forward's hooks do nothing while compiling) and under fullgraph=True; and the
memory policy on top keeps one tensor per block. Also: compiling a fused model does not de-optimise a
plain model of the same class compiled later in the process. Exact quantities only (see
test_memory_policy.py for how saved bytes are read off a compiled graph)."""
import copy

import torch
import torch._dynamo
import torch._dynamo.testing
import torch.nn as nn
from test_memory_policy import BATCH, SIDE, assert_same_state, batch_sized, conv_output_bytes, step, tiny_cnn
from torch._dynamo.utils import counters

import swishkernels as sk
from helpers import randn, saved_by_graph


def fused_copy(plain, x, recompute=True):
    fused = copy.deepcopy(plain)
    assert len(sk.fuse_bn_swish(fused, recompute=recompute, example_inputs=x).fused) == 3
    return fused


def test_fused_recompute_model_compiles_like_the_plain_one(gen):
    torch._dynamo.reset()
    counters.clear()
    plain = tiny_cnn(nn.SiLU)
    x = randn(BATCH, 3, SIDE, SIDE, dtype=torch.float64, gen=gen)
    fused = fused_copy(plain, x)
    hooks = sk.recompute_in_forward(fused)  # its saved_tensors_hooks stay out of the compiled graph
    fused_counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager_decomp_partition")
    compiled_fused = torch.compile(fused, fullgraph=True, backend=fused_counter)
    reference = copy.deepcopy(plain)
    for _ in range(2):
        gen_state = gen.get_state()
        expected = step(reference, x, gen)
        gen.set_state(gen_state)
        torch.testing.assert_close(step(compiled_fused, x, gen), expected)
        assert_same_state(fused, reference)
    x.requires_grad_()  # as in step(): no recompile for another requires_grad
    fused_kept = sorted(saved_by_graph(compiled_fused(x), exclude=fused).values())
    assert fused_counter.frame_count == 1 and not counters["graph_break"]
    for hook in hooks:
        hook.remove()
    # Keeps exactly what compile alone keeps: the same graph.
    plain_counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager_decomp_partition")
    compiled_plain = torch.compile(copy.deepcopy(plain), fullgraph=True, backend=plain_counter)
    assert fused_kept == sorted(saved_by_graph(compiled_plain(x), exclude=compiled_plain).values())


def test_fused_model_with_policy_under_inductor(gen):
    # The one Inductor compile of the suite (about 20 s here): fused + recompute + memory policy, float64.
    torch._dynamo.reset()
    counters.clear()
    plain = tiny_cnn(nn.SiLU)
    x = randn(BATCH, 3, SIDE, SIDE, dtype=torch.float64, gen=gen)
    fused = sk.memory_policy(fused_copy(plain, x))
    compiled = torch.compile(fused, fullgraph=True)
    with sk.recompute_bn_swish():
        gen_state = gen.get_state()
        expected = step(plain, x, gen)
        gen.set_state(gen_state)
        torch.testing.assert_close(step(compiled, x, gen), expected)
        assert_same_state(fused, plain)
        kept = batch_sized(compiled(x.requires_grad_()), fused)
    assert kept == sorted([x.untyped_storage().nbytes(), *conv_output_bytes(plain, x)])
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def test_compiling_a_fused_model_leaves_other_compiled_models_alone(gen):
    # Reported: after a fused+recompute copy of a model was compiled, a compiled plain copy of the same class
    # ran as if uncompiled. Both share nn.Sequential.forward's code object and so dynamo's cache for it.
    torch._dynamo.reset()
    plain = tiny_cnn(nn.SiLU)
    x = randn(BATCH, 3, SIDE, SIDE, dtype=torch.float64, gen=gen)
    fused = fused_copy(plain, x)
    sk.recompute_in_forward(fused)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager_decomp_partition")
    torch.compile(fused, backend=counter)(x).sum().backward()  # as the user did: no fullgraph
    frames_after_fused = counter.frame_count
    user_model = copy.deepcopy(plain)
    compiled_user_model = torch.compile(user_model, backend=counter)
    compiled_user_model(x).sum().backward()
    assert counter.frame_count == frames_after_fused + 1  # the user's model got a graph of its own
    compiled_kept = sum(saved_by_graph(compiled_user_model(x), exclude=user_model).values())
    assert compiled_kept < sk.saved_for_backward(user_model, x).bytes  # and keeps what compile alone keeps
