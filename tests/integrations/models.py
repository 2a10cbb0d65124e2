"""The real models our users train, built from config (no weights, no network), and what the tests
count about them independently of swishkernels' own fusion code."""
import timm
import torch
import torch.nn as nn
import torchvision
from timm.layers.norm_act import BatchNormAct2d
from ultralytics.nn.tasks import DetectionModel

import swishkernels as sk

BUILDERS = {
    "yolov8n": lambda: DetectionModel("yolov8n.yaml", verbose=False),
    "yolo11n": lambda: DetectionModel("yolo11n.yaml", verbose=False),
    "yolov5nu": lambda: DetectionModel("yolov5nu.yaml", verbose=False),
    "timm-efficientnet_b0": lambda: timm.create_model("efficientnet_b0"),
    "timm-resnet50": lambda: timm.create_model("resnet50", act_layer="silu"),
    "timm-cspdarknet53": lambda: timm.create_model("cspdarknet53", act_layer="silu"),
    "torchvision-efficientnet_b0": lambda: torchvision.models.efficientnet_b0(),
}
ULTRALYTICS = ("yolov8n", "yolo11n", "yolov5nu")
# Models whose SiLUs all follow BatchNorms (resnet50's SiLUs after residual adds are out of reach).
SILU_AFTER_BN = ULTRALYTICS + ("timm-efficientnet_b0", "timm-cspdarknet53", "torchvision-efficientnet_b0")


def build(name, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return BUILDERS[name]().to(dtype).train()


def example_input(dtype=torch.float32, batch=2, height=64, width=32, seed=1):
    """Small enough for CI, large enough that the deepest (stride-32) BatchNorms see 2 x 2 x 1 values."""
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def count_bn_silu_pairs(model, x, act_types=(nn.SiLU,)):
    """BatchNorm -> SiLU pairs seen in one forward, by hooks alone: a BatchNorm2d output that reaches an
    `act_types` call unmodified (same tensor, same version), and timm BatchNormAct2d layers whose own SiLU
    runs right after their normalisation (no drop layer between). x: the input, or a tuple of inputs."""
    outputs = {}  # id(tensor) -> version when the BatchNorm returned it
    pairs = []
    inside_norm_act = []
    handles = []

    def bn_done(module, args, out):
        outputs[id(out)] = (out, out._version)

    def silu_called(module, args):
        x = args[0]
        seen = outputs.get(id(x))
        if seen is not None and seen[0] is x and seen[1] == x._version:
            pairs.append(module)
            del outputs[id(x)]
        elif inside_norm_act and inside_norm_act[-1].act is module:
            pairs.append(module)

    def norm_act_starts(module, args):
        inside_norm_act.append(module)

    def norm_act_ends(module, args, out):
        inside_norm_act.pop()

    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            handles.append(module.register_forward_hook(bn_done))
        elif type(module) is BatchNormAct2d and isinstance(module.drop, nn.Identity) \
                and type(module.act) in act_types:
            handles.append(module.register_forward_pre_hook(norm_act_starts))
            handles.append(module.register_forward_hook(norm_act_ends))
        elif type(module) in act_types:
            handles.append(module.register_forward_pre_hook(silu_called))
    buffers = [(b, b.clone()) for b in model.buffers()]  # a train-mode forward updates running statistics
    try:
        with torch.no_grad():
            model(*(x if isinstance(x, tuple) else (x,)))
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, value in buffers:
                buffer.copy_(value)
    return len(pairs)


def flat_outputs(output):
    return [t for t in torch.utils._pytree.tree_flatten(output)[0] if isinstance(t, torch.Tensor)]


def saved_bytes(model, x, recompute=False):
    """Bytes autograd keeps in one forward (sk.saved_for_backward), with the RNG seeded so dropout draws the
    same masks for every model compared."""
    torch.manual_seed(0)
    return sk.saved_for_backward(model, x, recompute=recompute).bytes
