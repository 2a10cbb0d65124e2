"""ONNX export with both exporters (TorchScript-based `dynamo=False` and `dynamo=True`) of models with
sk.Swish, sk.Mish and sk.BatchNormSwish2d (eval): standard ONNX ops only, run in onnxruntime, the
same numbers as eager PyTorch, and a dynamic batch axis."""
import io
import warnings

import onnx
import onnxruntime
import pytest
import torch
import torch.nn as nn

import swishkernels as sk
from helpers import randn

# What each model must contain after export (any one of the alternatives), and all that is allowed.
EXPECTED_OPS = {
    "swish": [{"Sigmoid", "Mul"}],
    "mish": [{"Mish"}, {"Softplus", "Tanh", "Mul"}],
    "bn_swish": [{"BatchNormalization", "Sigmoid", "Mul"}],
}
ALLOWED_OPS = {"Conv", "Sigmoid", "Mul", "Mish", "Softplus", "Tanh", "BatchNormalization", "Add"}


def _model(kind, backend, gen):
    if kind == "swish":
        body = [nn.Conv2d(3, 6, 3), sk.Swish(backend=backend), nn.Conv2d(6, 4, 1),
                sk.Swish(inplace=True, backend=backend)]
    elif kind == "mish":
        body = [nn.Conv2d(3, 6, 3), sk.Mish(backend=backend), nn.Conv2d(6, 4, 1),
                sk.Mish(inplace=True, backend=backend)]
    else:  # first: no convolution before it to fold it into, so BatchNormalization stays
        body = [sk.BatchNormSwish2d(3, backend=backend), nn.Conv2d(3, 4, 3),
                sk.BatchNormSwish2d(4, backend=backend)]
    model = nn.Sequential(*body)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(randn(module.num_features, gen=gen, scale=0.3) + 1)
                module.bias.copy_(randn(module.num_features, gen=gen, scale=0.3))
                module.running_mean.copy_(randn(module.num_features, gen=gen, scale=0.5))
                module.running_var.copy_(randn(module.num_features, gen=gen, scale=0.3).abs() + 0.5)
    return model.eval()


def _export(model, x, dynamo):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notes of the TorchScript exporter
        if dynamo:
            program = torch.onnx.export(model, (x,), dynamo=True, input_names=["x"], verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
            return program.model_proto
        torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("kind", list(EXPECTED_OPS))
def test_onnx_export_standard_ops_runs_in_onnxruntime(kind, dynamo, gen):
    backend = sk.available_backends("cpu")[0]
    model = _model(kind, backend, gen)
    proto = _export(model, randn(2, 3, 9, 10, gen=gen), dynamo)
    onnx.checker.check_model(proto)
    nodes = {(node.domain, node.op_type) for node in proto.graph.node}
    assert {domain for domain, _ in nodes} <= {"", "ai.onnx"}, nodes  # no custom domain
    op_types = {op for _, op in nodes}
    assert op_types <= ALLOWED_OPS, op_types
    assert any(ops <= op_types for ops in EXPECTED_OPS[kind]), op_types
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch axis is dynamic
        x = randn(batch, 3, 9, 10, gen=gen)
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), model(x))
