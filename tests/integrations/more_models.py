"""More real models users fuse, built from config (no weights, no network): pip yolov5, YOLOX,
EfficientNet-PyTorch (the seed thread's MemoryEfficientSwish), effdet and a segmentation-models-pytorch Unet.
Each with the inputs its training-mode forward takes and the Swish classes it uses (for the independent
pair count in models.count_bn_silu_pairs, which names them rather than recognising them)."""
import os
import sys
import types

import torch
import torch.nn as nn


def _yolov5_model_class():
    stand_in = False
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        # yolov5 7.0.14 imports pkg_resources for parse_version alone; setuptools 81+ no longer ships it. The
        # stand-in lives only while yolov5 is imported (its modules keep their reference), so nothing else sees it.
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
        stand_in = True
    try:
        import yolov5
        from yolov5.models.yolo import Model
    finally:
        if stand_in:
            del sys.modules["pkg_resources"]
    return Model, os.path.join(os.path.dirname(yolov5.__file__), "models")


def yolov5n(size=None):
    model_class, configs = _yolov5_model_class()
    return model_class(os.path.join(configs, "yolov5n.yaml"))


def yolox_nano(size=None):
    """YOLOX at the nano depth and width with plain convolutions (YOLOX-s's blocks, a quarter of its width)."""
    from yolox.models import YOLOPAFPN, YOLOX, YOLOXHead

    return YOLOX(YOLOPAFPN(0.33, 0.25, act="silu"), YOLOXHead(2, 0.25, act="silu"))


def efficientnet_pytorch_b0(size=None):
    from efficientnet_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-b0")


def effdet_d0(size=128):
    import effdet

    return effdet.create_model("tf_efficientdet_d0", pretrained=False, pretrained_backbone=False,
                               image_size=(size, size))  # its feature-map sizes are fixed by the config


def smp_unet(size=None):
    import segmentation_models_pytorch as smp

    # Three of the encoder's five stages (its first 5 blocks): the same blocks, a CI-sized model.
    return smp.Unet("efficientnet-b0", encoder_weights=None, classes=1, encoder_depth=3,
                    decoder_channels=(32, 16, 8))


def swish_types():
    """Every Swish class these models use, by name."""
    from efficientnet_pytorch.utils import MemoryEfficientSwish, Swish
    from timm.layers.activations import Swish as TimmSwish

    return (nn.SiLU, MemoryEfficientSwish, Swish, TimmSwish)


def _image(size, dtype, seed=1):
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _image_only(dtype, size):
    return (_image(size, dtype),)


def _image_and_targets(dtype, size):
    """YOLOX's training forward takes targets (batch, max boxes, class + cx cy w h in pixels): one box each."""
    boxes = torch.tensor([[[1, 0.45, 0.45, 0.3, 0.25]], [[0, 0.3, 0.6, 0.35, 0.2]]], dtype=dtype)
    return (_image(size, dtype), boxes * torch.tensor([1, size, size, size, size], dtype=dtype))


# name -> (builder(size), inputs(dtype, size) -> forward arguments in training mode, the tests' image size)
MORE = {
    "yolov5n": (yolov5n, _image_only, 64),
    "yolox-nano": (yolox_nano, _image_and_targets, 64),
    "efficientnet-pytorch-b0": (efficientnet_pytorch_b0, _image_only, 64),
    "effdet-d0": (effdet_d0, _image_only, 128),  # P3-P7: a multiple of 128
    "smp-unet-efficientnet-b0": (smp_unet, _image_only, 32),
}


def build_more(name, dtype=torch.float64, seed=0, size=None):
    torch.manual_seed(seed)
    return MORE[name][0](size or MORE[name][2]).to(dtype).train()


def more_inputs(name, dtype=torch.float64, size=None):
    return MORE[name][1](dtype, size or MORE[name][2])
