"""sk.memory_policy(model): keep convolution outputs, recompute BatchNorm and activations, for any CNN.

Exact quantities only. Saved bytes: in eager, sk.saved_for_backward (the policy routes the convolution
outputs it keeps through the caller's saved_tensors_hooks); under torch.compile, the compiled autograd
node's own saved_tensors (helpers.saved_by_graph: what its backward graph takes, read off the graph; hooks
around a compiled call would make dynamo compile a second graph and measure that one). Compiled
checks use the "aot_eager_decomp_partition" backend: Inductor's decompositions and its min-cut
partitioner (the part that decides what is kept), without Inductor's code generation, which costs 20 s a
model here; test_compile_fused.py compiles one model with Inductor itself.
"""
import collections
import copy
import functools

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch.nn as nn
from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
from torch._dynamo.backends.common import aot_autograd
from torch._inductor.compile_fx import select_decomp_table

import swishkernels as sk
from helpers import randn, saved_by_graph

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "leaky_inplace": lambda: nn.LeakyReLU(0.1, inplace=True)}
BATCH, SIDE = 2, 12


def tiny_cnn(activation) -> nn.Module:
    """Three Conv-BN-activation blocks and a 1x1 head, float64, with random BatchNorm parameters."""
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), activation())
    model = nn.Sequential(block(3, 8), block(8, 8), block(8, 8), nn.Conv2d(8, 4, 1)).double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def conv_output_bytes(model, x, blocks_only=True):
    """Bytes of the convolution outputs in one forward (only those followed by BatchNorm: blocks_only)."""
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, out: sizes.append(out.untyped_storage().nbytes()))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return sizes[:3] if blocks_only else sizes


def batch_sized(output, model):
    """Sorted storage bytes of the batch-sized tensors the graph behind `output` keeps (saved_by_graph).
    Compiled graphs also keep per-channel tensors and weight copies; these are the full-size ones."""
    return sorted(nbytes for nbytes in saved_by_graph(output, exclude=model).values()
                  if nbytes % (BATCH * SIDE * SIDE) == 0 and nbytes >= BATCH * 3 * SIDE * SIDE * 8)


def step(model, x, gen):
    """Output, input gradient and parameter gradients of one training step with a random loss weighting."""
    x = x.detach().requires_grad_()
    out = model(x)
    weights = randn(*out.shape, dtype=out.dtype, gen=gen)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad((out * weights).sum(), [x, *params])
    return out.detach(), grads


def assert_same_state(model, peer):
    for (name, buffer), peer_buffer in zip(model.named_buffers(), peer.buffers()):
        torch.testing.assert_close(buffer, peer_buffer, msg=name)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_eager_policy_matches_and_keeps_one_tensor_per_block(activation, gen):
    plain = tiny_cnn(ACTIVATIONS[activation])
    policy = sk.memory_policy(copy.deepcopy(plain))
    x = randn(BATCH, 3, SIDE, SIDE, dtype=torch.float64, gen=gen)
    for _ in range(2):  # two steps: running statistics updated once per forward, not once more by recompute
        gen_state = gen.get_state()
        expected = step(plain, x, gen)
        gen.set_state(gen_state)
        torch.testing.assert_close(step(policy, x, gen), expected)
        assert_same_state(policy, plain)
    # Kept: the input and every conv output (the head's too: checkpoint caches it though nothing needs it).
    kept = sk.saved_for_backward(policy, x)
    assert kept.bytes == x.untyped_storage().nbytes() + sum(conv_output_bytes(plain, x, blocks_only=False))
    assert kept.bytes < sk.saved_for_backward(plain, x).bytes


def test_eager_policy_on_a_fused_recompute_model(gen):
    plain = tiny_cnn(nn.SiLU)
    fused = copy.deepcopy(plain)
    x = randn(BATCH, 3, SIDE, SIDE, dtype=torch.float64, gen=gen)
    assert len(sk.fuse_bn_swish(fused, recompute=True, example_inputs=x).fused) == 3
    sk.memory_policy(fused)
    gen_state = gen.get_state()
    expected = step(plain, x, gen)
    gen.set_state(gen_state)
    with sk.recompute_bn_swish():
        torch.testing.assert_close(step(fused, x, gen), expected)
    assert_same_state(fused, plain)
    assert sk.saved_for_backward(fused, x, recompute=True).bytes == \
        sk.saved_for_backward(sk.memory_policy(copy.deepcopy(plain)), x).bytes


def test_memory_policy_applies_once_and_comes_off(gen):
    model = tiny_cnn(nn.SiLU)
    x = randn(BATCH, 3, SIDE, SIDE, dtype=torch.float64, gen=gen)
    plain_bytes = sk.saved_for_backward(model, x).bytes
    assert sk.memory_policy(sk.memory_policy(model)) is model
    policy_bytes = sk.saved_for_backward(model, x).bytes
    assert policy_bytes < plain_bytes
    assert sk.remove_memory_policy(model) is model and "forward" not in model.__dict__
    assert sk.saved_for_backward(model, x).bytes == plain_bytes
    with pytest.raises(TypeError, match="nn.Module"):
        sk.memory_policy(lambda x: x)


@pytest.mark.parametrize("activation", ["silu", "leaky_inplace"])
def test_compiled_policy_fullgraph_one_tensor_per_block(activation, gen):
    torch._dynamo.reset()
    plain = tiny_cnn(ACTIVATIONS[activation])
    model = copy.deepcopy(plain)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager_decomp_partition")
    compiled = torch.compile(sk.memory_policy(model), fullgraph=True, backend=counter)
    for _ in range(3):  # fresh inputs each step: one graph, no recompile
        x = randn(BATCH, 3, SIDE, SIDE, dtype=torch.float64, gen=gen)
        gen_state = gen.get_state()
        expected = step(plain, x, gen)
        gen.set_state(gen_state)
        torch.testing.assert_close(step(compiled, x, gen), expected)
        assert_same_state(model, plain)
    assert counter.frame_count == 1
    # Kept for backward: the input and the three block conv outputs, nothing else of batch size.
    expected = sorted([x.untyped_storage().nbytes(), *conv_output_bytes(plain, x)])
    assert batch_sized(compiled(x), model) == expected


def partitioned_graphs(model, x):
    """The forward and backward graphs torch.compile(model, fullgraph=True) partitions one step into, with
    Inductor's decompositions and min-cut partitioner (aot_eager_decomp_partition, graphs kept)."""
    graphs = {}

    def keeping(kind):
        def compiler(gm, example_inputs):
            graphs[kind] = gm
            return make_boxed_func(gm.forward)
        return compiler

    def backend(gm, example_inputs):
        return aot_autograd(fw_compiler=keeping("forward"), bw_compiler=keeping("backward"),
                            decompositions=select_decomp_table(),
                            partition_fn=functools.partial(min_cut_rematerialization_partition,
                                                           compiler="inductor"))(gm, example_inputs)
    torch._dynamo.reset()
    torch.compile(model, fullgraph=True, backend=backend)(x).sum().backward()
    return graphs["forward"], graphs["backward"]


def backward_ops_and_saved(model, x):
    """(Counter of the backward graph's ops, Counter of (shape, dtype) of the tensors it takes from forward
    other than the graph's inputs (parameters, buffers, x): what the partitioner chose to keep)."""
    _, backward = partitioned_graphs(model, x)
    ops = collections.Counter(str(node.target) for node in backward.graph.nodes if node.op == "call_function")
    saved = collections.Counter(
        (tuple(node.meta["val"].shape), node.meta["val"].dtype) for node in backward.graph.nodes
        if node.op == "placeholder" and isinstance(node.meta.get("val"), torch.Tensor)
        and not node.name.startswith(("primals", "tangents")))
    return ops, saved


def pooling_cnn() -> nn.Module:
    """Conv-BN-SiLU, two overlapping 5x5 stride-1 max pools in a chain (YOLO's SPPF), Conv-BN-SiLU, a 2x2
    stride-2 max pool, Conv-BN-SiLU, a 1x1 head; float64."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SiLU()]
    torch.manual_seed(0)
    return nn.Sequential(*block(3, 8), nn.MaxPool2d(5, 1, 2), nn.MaxPool2d(5, 1, 2), *block(8, 8),
                         nn.MaxPool2d(2, 2), *block(8, 8), nn.Conv2d(8, 4, 1)).double()


def test_compiled_policy_keeps_statistics_and_overlapping_pool_offsets(gen):
    # Under compile the policy leaves BatchNorm (and reductions) and overlapping max pools to the
    # partitioner: backward takes each BatchNorm's per-channel mean and rstd from forward instead of
    # recomputing them (no var_mean in backward: that was a second pass over every conv output), and each
    # overlapping pool's 1-byte offsets instead of recomputing a windowed argmax (on yolov8n's SPPF that
    # cost 1.1x compile's step). The non-overlapping 2x2 pool is still recomputed (one pass, keeps nothing).
    model = pooling_cnn()
    x = randn(BATCH, 3, SIDE, SIDE, dtype=torch.float64, gen=gen)
    ops, saved = backward_ops_and_saved(sk.memory_policy(copy.deepcopy(model)), x)
    assert ops["aten.var_mean.correction"] == 0
    assert ops["prims._low_memory_max_pool_with_offsets.default"] == 1  # the 2x2 pool, recomputed
    f64 = torch.float64
    full, half = (BATCH, 8, SIDE, SIDE), (BATCH, 8, SIDE // 2, SIDE // 2)
    assert saved == {(full, f64): 3,  # two block conv outputs, and the first pool's output (the second reads it)
                     (half, f64): 1,  # the last block's conv output
                     (full, torch.int8): 2,  # the overlapping pools' offsets
                     ((1, 8, 1, 1), f64): 6}  # mean and rstd of each BatchNorm
    # The tiny CNN (no pools): the three conv outputs and the statistics, nothing else.
    ops, saved = backward_ops_and_saved(sk.memory_policy(tiny_cnn(nn.SiLU)), x)
    assert ops["aten.var_mean.correction"] == 0
    assert saved == {(full, f64): 3, ((1, 8, 1, 1), f64): 6}
