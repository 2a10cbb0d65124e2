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
# yolov3-spp-pan: yolov3-spp plus the bottom-up path's 12 convolutions, counted by hand in the cfg's header
# comment: +15,249,408 (PAN_ADDED below) = 78,248,157; the heads are yolov3-spp's (same 80 -> 3 class change);
# BN running stats + 2 x 6,144 channels.
PAN_ADDED = {  # layer: (kernel, in, out), all batch-normalized: k*k*in*out + 2*out parameters
    107: (3, 128, 256), 109: (1, 512, 256), 110: (3, 256, 512), 111: (1, 512, 256), 112: (3, 256, 512),
    113: (1, 512, 256), 118: (3, 256, 512), 120: (1, 1024, 512), 121: (3, 512, 1024), 122: (1, 1024, 512),
    123: (3, 512, 1024), 124: (1, 1024, 512),
}
COUNTS = [
    ("yolov3", 61_949_149, 61_534_504, 52_608),
    ("yolov3-tiny", 8_852_366, 8_674_496, 6_368),
    ("yolov3-spp", 62_998_749, 62_584_104, 53_632),
    ("yolov3-spp-pan", 78_248_157, 77_833_512, 65_920),
]
STRIDES = {"yolov3": [32, 16, 8], "yolov3-tiny": [32, 16], "yolov3-spp": [32, 16, 8], "yolov3-spp-pan": [8, 16, 32]}
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
        "silu": nn.SiLU, "mish": swishkernels.Mish, "prelu": nn.PReLU, "prelu1": nn.PReLU, "linear": nn.Identity,
    }
    assert set(expected) == set(ACTIVATIONS)
    for name, kind in expected.items():
        assert type(build_activation(name, channels=8)) is kind, name
    leaky = build_activation("leaky")
    assert leaky.negative_slope == 0.1 and leaky.inplace
    prelu = build_activation("prelu", channels=8)
    assert prelu.num_parameters == 8 and torch.allclose(prelu.weight, torch.full((8,), 0.1))
    # The seed thread's other form: nn.PReLU(num_parameters=1), PyTorch's init 0.25, whatever the channels.
    prelu1 = build_activation("prelu1", channels=8)
    assert prelu1.num_parameters == 1 and prelu1.weight.tolist() == [0.25]
    with pytest.raises(ValueError, match="channels"):
        build_activation("prelu")


def test_prelu_forms_in_a_darknet():
    per_channel, per_layer = (Darknet("yolov3-tiny", num_classes=2, activation=a) for a in ("prelu", "prelu1"))
    slopes = [m.weight for m in per_channel.modules() if isinstance(m, nn.PReLU)]
    convs = [m[0] for m in per_channel.module_list if isinstance(m, nn.Sequential) and hasattr(m, "act")]
    assert [w.numel() for w in slopes] == [c.out_channels for c in convs] and len(slopes) == 11
    assert all((w == 0.1).all() for w in slopes)
    slopes = [m.weight for m in per_layer.modules() if isinstance(m, nn.PReLU)]
    assert [w.tolist() for w in slopes] == [[0.25]] * 11
    assert sum(p.numel() for p in per_channel.parameters()) - sum(p.numel() for p in per_layer.parameters()) == \
        sum(c.out_channels for c in convs) - 11


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


# ---- issue 20: the seed thread's knobs in the model ------------------------------------------------------------

def decoded_centres(head, logit, ny=2, nx=3):
    """(x, y) of every cell's decoded box, all centre logits = `logit`: (ny, nx, 2)."""
    p = torch.zeros(1, head.na, ny, nx, head.no)
    p[..., :2] = logit
    return head.decode(p).view(head.na, ny, nx, head.no)[0, ..., :2]


@pytest.mark.parametrize("scale", [1.0, 1.2, 1.5])
def test_scale_xy_decodes_centres_beyond_the_cell_edges(scale):
    """Centre = (scale * sigmoid(t) - (scale - 1) / 2 + cell) * stride: at t -> -inf/+inf it lies (scale - 1)/2
    of a cell outside the cell's edges, at t = 0 in the cell's middle (in float64, by the formula)."""
    head = YOLOLayer([(10.0, 12.0)], num_classes=1, stride=8, scale_xy=scale)
    cells = torch.stack(torch.meshgrid(torch.arange(2.0), torch.arange(3.0), indexing="ij")[::-1], -1)
    beyond = (scale - 1) / 2
    torch.testing.assert_close(decoded_centres(head, -40.0), (cells - beyond) * 8)
    torch.testing.assert_close(decoded_centres(head, 40.0), (cells + 1 + beyond) * 8)
    torch.testing.assert_close(decoded_centres(head, 0.0), (cells + 0.5) * 8)
    if scale > 1:  # the edges themselves are reached by finite logits: sigmoid(t) = beyond / scale
        edge = math.log(beyond / (scale - beyond))
        torch.testing.assert_close(decoded_centres(head, edge), cells * 8)
        torch.testing.assert_close(decoded_centres(head, -edge), (cells + 1) * 8)
    t = torch.linspace(-6, 6, 13, dtype=torch.float64)
    torch.testing.assert_close(head.cell_offset(t), scale * torch.sigmoid(t) - (scale - 1) / 2)


def test_scale_xy_from_the_cfg_and_the_override(tmp_path):
    path = write(tmp_path, TINY_CFG + "scale_x_y=1.05\n")
    assert [h.scale_xy for h in Darknet(str(path)).yolo_layers] == [1.05]
    assert [h.scale_xy for h in Darknet(str(write(tmp_path, TINY_CFG, "plain.cfg"))).yolo_layers] == [1.0]
    model = Darknet(str(path), scale_xy=1.5)
    assert model.yolo_layers[0].scale_xy == 1.5 and model.module_defs[-1]["scale_x_y"] == 1.5
    # The override reaches decoding: with the same weights, every centre lies 1.5 / 1.05 times as far from
    # its cell's middle as with the cfg's value; sizes and probabilities are unchanged.
    torch.manual_seed(0)
    wide = Darknet(str(path), scale_xy=1.5).eval()
    torch.manual_seed(0)
    cfg_scale = Darknet(str(path)).eval()
    x = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        p_wide, p_cfg = wide(x), cfg_scale(x)
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(6.0), indexing="ij")
    middles = (torch.stack((xs, ys), -1).view(1, -1, 2).repeat(1, 3, 1) + 0.5) * 2  # stride 2, 3 anchors
    torch.testing.assert_close(p_wide[..., :2] - middles, (p_cfg[..., :2] - middles) * (1.5 / 1.05))
    assert torch.equal(p_wide[..., 2:], p_cfg[..., 2:])
    assert all(h.scale_xy == 1.2 for h in Darknet("yolov3-tiny", scale_xy=1.2).yolo_layers)
    with pytest.raises(ValueError, match=r"net.cfg:19:.*scale_x_y"):
        Darknet(str(write(tmp_path, TINY_CFG + "scale_x_y=0\n")))
    with pytest.raises(ValueError, match="scale_xy"):
        Darknet(str(path), scale_xy=-1.0)


def test_head_bias_sets_objectness_and_class_biases():
    torch.manual_seed(3)
    default = Darknet("yolov3-tiny", num_classes=3)
    torch.manual_seed(3)
    minus5 = Darknet("yolov3-tiny", num_classes=3, head_bias=-5)
    for d_head, head in zip(default.yolo_layers, minus5.yolo_layers):
        index = list(minus5.module_list).index(head)
        bias = minus5.module_list[index - 1][0].bias.view(head.na, head.no)
        prior = default.module_list[index - 1][0].bias.view(head.na, head.no)
        assert (bias[:, 4:] == -5.0).all()  # objectness and every class
        assert torch.equal(bias[:, :4], prior[:, :4])  # box biases keep PyTorch's init
        assert (prior[:, 4:] != -5.0).all()  # the default: priors, log(8 / cells) and log(0.6 / (nc - 0.99))
    for name, value in minus5.state_dict().items():  # nothing else changes
        if not name.endswith(".bias") or "conv" not in name:
            assert torch.equal(value, default.state_dict()[name]), name


def test_pan_cfg_is_spp_plus_a_bottom_up_path():
    from yolo.cfg_parser import parse_cfg, resolve_cfg

    _, spp = parse_cfg(resolve_cfg("yolov3-spp"))
    _, pan = parse_cfg(resolve_cfg("yolov3-spp-pan"))

    def strip(defs):
        return [{k: v for k, v in d.items() if k != "_line"} for d in defs]

    assert strip(pan[:87]) == strip(spp[:87])  # Darknet-53, SPP and the stride-32 five-conv set
    assert [pan[i]["layers"] for i in (108, 119)] == [[-1, 94], [-1, 86]]  # bottom-up routes to the top-down path
    assert [pan[i]["stride"] for i in (107, 118)] == [2, 2]  # and their downsampling convolutions
    for i, (k, c_in, c_out) in PAN_ADDED.items():
        assert (pan[i]["type"], pan[i]["size"], pan[i]["filters"], pan[i]["batch_normalize"]) == \
            ("convolutional", k, c_out, 1)
    with torch.device("meta"):
        model, spp_model = Darknet("yolov3-spp-pan"), Darknet("yolov3-spp")
    for i, (k, c_in, c_out) in PAN_ADDED.items():
        assert model.module_list[i][0].in_channels == c_in
    added = sum(k * k * c_in * c_out + 2 * c_out for k, c_in, c_out in PAN_ADDED.values())
    assert added == 15_249_408
    assert count(model) - count(spp_model) == added
    n_convs = [sum(isinstance(m, nn.Conv2d) for m in x.modules()) for x in (model, spp_model)]
    assert n_convs[0] == n_convs[1] + len(PAN_ADDED)
    assert [h.stride for h in model.yolo_layers] == [8, 16, 32]
    assert [pan[i]["mask"] for i in (105, 116, 127)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # small anchors first


@pytest.mark.slow  # builds and steps 78M parameters: a few seconds
def test_pan_trains_one_step(restore_threads):
    from yolo.loss import compute_loss

    torch.set_num_threads(1)  # tiny feature maps: on a busy 2-core machine a second thread only waits (4x slower)

    torch.manual_seed(0)
    model = Darknet("yolov3-spp-pan", num_classes=2).train()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[0, 0, 0.3, 0.4, 0.2, 0.3], [1, 1, 0.6, 0.5, 0.5, 0.6]])
    heads = model(x)
    assert [tuple(p.shape) for p in heads] == [(2, 3, 64 // s, 64 // s, 7) for s in (8, 16, 32)]
    loss, items = compute_loss(heads, targets, model)
    assert torch.isfinite(loss) and (items[:3] > 0).all()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss.backward()
    for i in (*PAN_ADDED, 126):  # every bottom-up conv and the stride-32 head learn
        grad = model.module_list[i][0].weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, i
    before = model.module_list[118][0].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.module_list[118][0].weight)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 3 * (8 * 8 + 4 * 4 + 2 * 2), 7)


def test_trainer_options_for_the_knobs():
    from yolo.train_args import OptionError, parse_explicit, resolve_options

    explicit = parse_explicit(["--scale-xy", "1.2", "--head-bias", "-5", "--activation", "prelu1"])
    assert explicit == {"scale_xy": 1.2, "head_bias": -5.0, "activation": "prelu1"}
    opt, _ = resolve_options(explicit)
    assert (opt.scale_xy, opt.head_bias, opt.activation) == (1.2, -5.0, "prelu1")
    defaults, _ = resolve_options({})
    assert defaults.scale_xy is None and defaults.head_bias is None  # the cfg's scale_x_y and the priors
    for bad in ({"scale_xy": 0.0}, {"scale_xy": float("nan")}, {"head_bias": float("inf")}, {"scale_xy": "big"}):
        with pytest.raises(OptionError, match=next(iter(bad)).replace("_", "-")):
            resolve_options(bad)
