"""Darknet cfg parsing and building: parameter counts, output shapes and decoding, overrides, cfg errors."""
import math

import pytest
import torch
import torch.nn as nn

from yolo.activations import ACTIVATIONS, build_activation
from yolo.models import Darknet, YOLOLayer

# (cfg, trainable parameters at 80 classes, at 3 classes, BatchNorm running mean+var elements).
# yolov3: 61,949,149 is the published (Ultralytics) count; parameters + BN running stats = 62,001,757, the
# float count of Darknet's yolov3.weights. yolov3-tiny: 8,852,366 + 6,368 = 8,858,734, the commonly quoted
# "8.86M" (it includes the BN running stats). yolov3-spp: the yolov3 head with one extra 2048->512 1x1 conv
# after the SPP concat (+1,048,576 weights, +1,024 BN): 62,998,749, Ultralytics' "6.29987e+07".
COUNTS = [
    ("yolov3", 61_949_149, 61_534_504, 52_608),
    ("yolov3-tiny", 8_852_366, 8_674_496, 6_368),
    ("yolov3-spp", 62_998_749, 62_584_104, 53_632),
]
STRIDES = {"yolov3": [32, 16, 8], "yolov3-tiny": [32, 16], "yolov3-spp": [32, 16, 8]}
H, W = 64, 96  # small and non-square: catches any h/w swap


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cfg, params80, params3, bn_stats", COUNTS)
def test_parameter_counts(cfg, params80, params3, bn_stats):
    with torch.device("meta"):  # counting needs no memory and no initialisation time
        model80, model3 = Darknet(cfg), Darknet(cfg, num_classes=3)
    assert count(model80) == params80
    assert count(model3) == params3
    running = sum(b.numel() for name, b in model80.named_buffers() if "running_" in name)
    assert running == bn_stats
    assert model80.num_classes == 80 and model3.num_classes == 3


def test_yolov3_matches_darknet_weights_file_size():
    with torch.device("meta"):
        model = Darknet("yolov3")
    running = sum(b.numel() for name, b in model.named_buffers() if "running_" in name)
    assert count(model) + running == 62_001_757


_BUILT = {}


def built_model(cfg):
    """One 3-class model per cfg for the whole module: building yolov3 costs about a second."""
    if cfg not in _BUILT:
        torch.manual_seed(0)
        _BUILT[cfg] = Darknet(cfg, num_classes=3)
    return _BUILT[cfg]


@pytest.fixture(params=["yolov3-tiny", "yolov3", "yolov3-spp"])
def built(request):
    return request.param, built_model(request.param)


@pytest.fixture(scope="module")
def image_batch():
    return torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1))


def test_train_output_shapes(built, image_batch):
    cfg, model = built
    model.train()
    heads = model(image_batch)
    assert [y.stride for y in model.yolo_layers] == STRIDES[cfg]
    assert [tuple(p.shape) for p in heads] == [(2, 3, H // s, W // s, 8) for s in STRIDES[cfg]]


def test_eval_output_is_decoded_boxes(built, image_batch):
    cfg, model = built
    model.eval()
    with torch.no_grad():
        pred, heads = model(image_batch, return_raw=True)
    assert torch.equal(pred, torch.cat([yl.decode(p) for yl, p in zip(model.yolo_layers, heads)], 1))
    n = sum(3 * (H // s) * (W // s) for s in STRIDES[cfg])
    assert pred.shape == (2, n, 8)
    x, y, w, h = pred[..., 0], pred[..., 1], pred[..., 2], pred[..., 3]
    assert (x > 0).all() and (x < W).all() and (y > 0).all() and (y < H).all()  # centres inside the image
    assert ((pred[..., 4:] > 0) & (pred[..., 4:] < 1)).all()  # probabilities
    # Freshly initialised logits are small, so sizes stay within a factor e^3 of their anchors.
    anchors = torch.cat([yl.anchors.repeat_interleave((H // yl.stride) * (W // yl.stride), 0)
                         for yl in model.yolo_layers])
    ratio = torch.stack((w, h), -1) / anchors
    assert (ratio > math.exp(-3)).all() and (ratio < math.exp(3)).all()
    # Decoding of one known cell, by the formula: head 0, anchor 1, cell (row 1, col 2), image 1.
    head, p = model.yolo_layers[0], heads[0][1, 1, 1, 2]
    s = head.stride
    expected = torch.cat((
        (torch.sigmoid(p[:2]) + torch.tensor([2.0, 1.0])) * s,
        torch.exp(p[2:4]) * head.anchors[1],
        torch.sigmoid(p[4:]),
    ))
    row = 1 * (H // s) * (W // s) + 1 * (W // s) + 2  # anchor-major, then row, then column
    torch.testing.assert_close(pred[1, row], expected)


def test_yolo_heads_carry_anchors_in_pixels():
    model = built_model("yolov3")
    expected = [[(116, 90), (156, 198), (373, 326)], [(30, 61), (62, 45), (59, 119)],
                [(10, 13), (16, 30), (33, 23)]]
    for head, anchors in zip(model.yolo_layers, expected):
        assert isinstance(head, YOLOLayer) and head.na == 3 and head.nc == 3
        assert head.anchors.dtype == torch.float32
        torch.testing.assert_close(head.anchors, torch.tensor(anchors, dtype=torch.float32))
    buffers = [name for name, _ in model.named_buffers() if name.endswith("anchors")]
    assert len(buffers) == 3  # registered, so they follow .to(device) and land in checkpoints


def test_head_biases_start_at_priors():
    model = Darknet("yolov3-tiny", num_classes=3)
    for head in model.yolo_layers:
        index = list(model.module_list).index(head)
        bias = model.module_list[index - 1][0].bias.view(head.na, head.no)
        bound = 1 / math.sqrt(model.module_list[index - 1][0].in_channels)  # PyTorch's default bias init range
        assert (bias[:, 4] - math.log(8 / (640 / head.stride) ** 2)).abs().max() <= bound
        assert (bias[:, 5:] - math.log(0.6 / (3 - 0.99))).abs().max() <= bound


def test_num_classes_override_rewrites_heads_and_defs():
    model = Darknet("yolov3-tiny", num_classes=7)
    assert model.num_classes == 7
    for head in model.yolo_layers:
        index = list(model.module_list).index(head)
        assert head.nc == 7 and model.module_list[index - 1][0].out_channels == 3 * (5 + 7)
        assert model.module_defs[index]["classes"] == 7 and model.module_defs[index - 1]["filters"] == 36


def test_tiny_stride1_maxpool_is_padded():
    model = Darknet("yolov3-tiny")
    pads = [m for m in model.modules() if isinstance(m, nn.ZeroPad2d)]
    assert len(pads) == 1 and pads[0].padding == (0, 1, 0, 1)


def test_spp_block_pools_5_9_13():
    with torch.device("meta"):
        model = Darknet("yolov3-spp")
    sizes = sorted(m.kernel_size for m in model.modules() if isinstance(m, nn.MaxPool2d))
    assert sizes == [5, 9, 13]


# ---- activations --------------------------------------------------------------------------------------------

def test_build_activation_types():
    import swishkernels
    from swishkernels import reference

    expected = {
        "leaky": nn.LeakyReLU, "swish": swishkernels.Swish, "swish-naive": reference.NaiveSwish,
        "swish-seed-inplace": reference.SeedInplaceSwish, "swish-me": reference.MemoryEfficientSwish,
        "silu": nn.SiLU, "mish": swishkernels.Mish, "prelu": nn.PReLU, "linear": nn.Identity,
    }
    assert set(expected) == set(ACTIVATIONS)
    for name, kind in expected.items():
        assert type(build_activation(name, channels=8)) is kind, name
    leaky = build_activation("leaky")
    assert leaky.negative_slope == 0.1 and leaky.inplace
    prelu = build_activation("prelu", channels=8)
    assert prelu.num_parameters == 8 and torch.allclose(prelu.weight, torch.full((8,), 0.1))


def test_bad_activation_name_lists_valid_names():
    with pytest.raises(ValueError, match="swish-me"):
        build_activation("swsh")
    with pytest.raises(ValueError, match="leaky"):
        Darknet("yolov3-tiny", activation="relu6")


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_override_replaces_every_leaky(name):
    torch.manual_seed(0)
    model = Darknet("yolov3-tiny", num_classes=2, activation=name)
    assert model.activation_name == name
    hidden_convs = [m for m in model.module_list if isinstance(m, nn.Sequential) and hasattr(m, "bn")]
    assert len(hidden_convs) == 11
    if name == "linear":  # "linear" means no activation module at all
        assert all(not hasattr(m, "act") for m in model.module_list if isinstance(m, nn.Sequential))
    else:
        kind = type(build_activation(name, channels=1))
        assert all(type(m.act) is kind for m in hidden_convs)
        assert sum(type(m) is kind for m in model.modules()) == 11
    if name != "leaky":
        assert not any(isinstance(m, nn.LeakyReLU) for m in model.modules())
    # The network still trains with it: a forward/backward gives finite gradients.
    heads = model(torch.rand(2, 3, 32, 32))
    sum(p.float().square().mean() for p in heads).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_default_activation_is_cfg_leaky():
    model = Darknet("yolov3-tiny")
    assert model.activation_name == "leaky"
    assert sum(isinstance(m, nn.LeakyReLU) for m in model.modules()) == 11


# ---- cfg files and their errors -------------------------------------------------------------------------------

TINY_CFG = """[net]
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=swish
[maxpool]
size=2
stride=1
[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear
[yolo]
mask=0,1,2
anchors=4,4, 8,8, 16,16
classes=2
num=3
"""


def write(tmp_path, text, name="net.cfg"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_cfg_from_path(tmp_path):
    import swishkernels

    model = Darknet(str(write(tmp_path, TINY_CFG)))
    assert model.num_classes == 2 and model.yolo_layers[0].stride == 2
    assert isinstance(model.module_list[0].act, swishkernels.Swish)  # cfg "swish" -> the fused module
    assert [d["type"] for d in model.module_defs] == ["convolutional", "maxpool", "convolutional", "yolo"]
    model.eval()
    assert model(torch.rand(1, 3, 8, 12)).shape == (1, 3 * 4 * 6, 7)


def test_missing_cfg_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.cfg"):
        Darknet(str(tmp_path / "nope.cfg"))
    with pytest.raises(FileNotFoundError, match="yolov9"):
        Darknet("yolov9")


@pytest.mark.parametrize("bad_line, lineno, message", [
    ("filters 8", 5, "malformed line"),  # no "="
    ("[convolutional", 2, "malformed section"),
    ("[lstm]", 2, "unsupported section"),
    ("filters=eight", 5, "not an integer"),
])
def test_malformed_cfg_names_file_and_line(tmp_path, bad_line, lineno, message):
    lines = TINY_CFG.splitlines()
    lines[lineno - 1] = bad_line
    path = write(tmp_path, "\n".join(lines))
    with pytest.raises(ValueError, match=message) as err:
        Darknet(str(path))
    # A bad value is reported at its section's header (line 3); a bad line at its own line.
    assert f"{path}:{3 if message == 'not an integer' else lineno}:" in str(err.value)


def test_inconsistent_cfgs_name_the_section(tmp_path):
    forward_route = TINY_CFG.replace("[maxpool]\nsize=2\nstride=1", "[route]\nlayers=5")
    with pytest.raises(ValueError, match=r"net.cfg:10:.*route"):
        Darknet(str(write(tmp_path, forward_route)))
    wrong_filters = TINY_CFG.replace("filters=21", "filters=20")
    with pytest.raises(ValueError, match=r"net.cfg:19:.*21 filters"):
        Darknet(str(write(tmp_path, wrong_filters)))
    # ...which the num_classes override repairs: it rewrites the filters of the conv before [yolo].
    assert Darknet(str(write(tmp_path, wrong_filters)), num_classes=2).num_classes == 2
