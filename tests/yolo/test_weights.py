"""Weights files: Darknet .weights (hand-built files of known values, export -> import bit-exact, cutoff,
class count from the size), .pt transfer (heads re-initialized for another class count, a clear error
for another shape), the conversion CLI and the trainer's --weights."""
import numpy as np
import pytest
import torch

from yolo.darknet_weights import WeightsError, cutoff_from_name, load_darknet_weights, save_darknet_weights, value_count
from yolo.models import Darknet
from yolo.weights import build_model, load_into, main, transfer

# Two convolutions: one with BatchNorm (no conv bias), one with a bias feeding a [yolo] head (1 anchor, 1 class).
TWO_CONVS = """[net]
channels=3
[convolutional]
batch_normalize=1
filters=2
size=3
stride=2
pad=1
activation=leaky
[convolutional]
filters=6
size=1
stride=1
activation=linear
[yolo]
mask=0
anchors=10,14
classes=1
"""


@pytest.fixture
def two_convs(tmp_path):
    path = tmp_path / "two.cfg"
    path.write_text(TWO_CONVS)
    return path


def randomized(model, seed=0):
    """Every tensor a .weights file holds set to distinct random values (BN statistics too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for n, b in model.named_buffers() if "running" in n]:
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return model


def header(major=0, minor=2, revision=0, seen=7):
    ints = np.array([major, minor, revision], np.int32).tobytes()
    return ints + (np.array([seen], np.int64) if major * 10 + minor >= 2 else np.array([seen], np.int32)).tobytes()


@pytest.mark.parametrize("version", [(0, 2, 0), (0, 1, 0)])   # seen as int64 / as int32 (older files)
def test_hand_built_file_lands_in_the_right_tensors(two_convs, tmp_path, version):
    model = Darknet(two_convs)
    n_bn, n_w1, n_b2, n_w2 = 2, 2 * 3 * 3 * 3, 6, 6 * 2
    values = np.arange(4 * n_bn + n_w1 + n_b2 + n_w2, dtype=np.float32)
    path = tmp_path / "hand.weights"
    path.write_bytes(header(*version) + values.tobytes())
    out = load_darknet_weights(model, path)
    assert out["seen"] == 7 and out["layers"] == 2 and out["values"] == len(values)
    conv1, bn, conv2 = model.module_list[0].conv, model.module_list[0].bn, model.module_list[1].conv
    # darknet order: BN bias, BN weight, running mean, running var, then the conv weights (row-major)
    assert bn.bias.tolist() == [0, 1] and bn.weight.tolist() == [2, 3]
    assert bn.running_mean.tolist() == [4, 5] and bn.running_var.tolist() == [6, 7]
    assert torch.equal(conv1.weight, torch.arange(8, 8 + n_w1, dtype=torch.float32).view(2, 3, 3, 3))
    start = 8 + n_w1
    assert conv2.bias.tolist() == list(range(start, start + 6))  # a conv without BN: bias first
    assert torch.equal(conv2.weight.flatten(), torch.arange(start + 6, start + 6 + n_w2, dtype=torch.float32))


def test_export_import_round_trip_is_bit_exact(tmp_path):
    model = randomized(Darknet("yolov3-tiny", num_classes=3))
    path = save_darknet_weights(model, tmp_path / "tiny.weights")
    assert path.stat().st_size == 20 + 4 * value_count(model)
    again = Darknet("yolov3-tiny", num_classes=3)
    load_darknet_weights(again, path)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        if "num_batches_tracked" not in k:   # not in the Darknet format
            assert torch.equal(a, b), k
    assert save_darknet_weights(again, tmp_path / "again.weights").read_bytes() == path.read_bytes()


def test_backbone_file_with_cutoff(tmp_path):
    full = randomized(Darknet("yolov3-tiny", num_classes=3))
    path = save_darknet_weights(full, tmp_path / "yolov3-tiny.conv.15", cutoff=15)
    assert cutoff_from_name(path) == 15
    model = Darknet("yolov3-tiny", num_classes=3)
    fresh_head = model.module_list[15].conv.weight.clone()
    report = load_into(model, path)   # cutoff taken from the name
    assert "layers 0..14" in report
    assert torch.equal(model.module_list[13].conv.weight, full.module_list[13].conv.weight)
    assert torch.equal(model.module_list[15].conv.weight, fresh_head)   # beyond the cutoff: untouched
    with pytest.raises(WeightsError, match=r"ends inside layer 15 \(\[convolutional\] at .*yolov3-tiny\.cfg:\d+\)"):
        load_darknet_weights(Darknet("yolov3-tiny", num_classes=3), path)   # the whole model from a backbone file


def test_a_file_too_long_for_the_model_is_an_error(two_convs, tmp_path):
    path = tmp_path / "long.weights"
    path.write_bytes(header() + np.zeros(value_count(Darknet(two_convs)) + 3, np.float32).tobytes())
    with pytest.raises(WeightsError, match=r"long\.weights: holds \d+ values but .* needs \d+"):
        load_darknet_weights(Darknet(two_convs), path)


def test_full_file_of_another_class_count_loads_all_but_the_heads(tmp_path):
    eighty = randomized(Darknet("yolov3-tiny", num_classes=80))
    path = save_darknet_weights(eighty, tmp_path / "yolov3-tiny.weights")
    model = Darknet("yolov3-tiny", num_classes=3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_into(model, path)
    assert "heads start fresh" in report
    heads = {"module_list.15.conv.weight", "module_list.15.conv.bias", "module_list.22.conv.weight",
             "module_list.22.conv.bias"}
    for k, v in model.state_dict().items():
        if "num_batches_tracked" in k:
            continue
        assert torch.equal(v, fresh[k] if k in heads else eighty.state_dict()[k]), k
    built, info = build_model(path, cfg="yolov3-tiny")   # val/detect: class count from the file size
    assert info["nc"] == 80 and torch.equal(built.module_list[22].conv.bias, eighty.module_list[22].conv.bias)


def test_pt_of_another_class_count_keeps_all_but_the_heads():
    five = randomized(Darknet("yolov3-tiny", num_classes=5))
    model = Darknet("yolov3-tiny", num_classes=3)
    fresh_head = model.module_list[22].conv.bias.clone()
    assert "heads start fresh" in transfer(model, five.state_dict(), "five.pt")
    assert torch.equal(model.module_list[22].conv.bias, fresh_head)
    assert torch.equal(model.module_list[21].conv.weight, five.module_list[21].conv.weight)
    assert torch.equal(model.module_list[0].bn.running_var, five.module_list[0].bn.running_var)


def test_pt_transfer_errors_name_the_layer(tmp_path):
    state = Darknet("yolov3-tiny", num_classes=3).state_dict()
    state["module_list.2.conv.weight"] = torch.zeros(5, 16, 3, 3)
    with pytest.raises(WeightsError, match=r"layer module_list\.2\.conv\.weight has shape \(5, 16, 3, 3\) but the "
                                           r"model's is \(32, 16, 3, 3\)"):
        transfer(Darknet("yolov3-tiny", num_classes=3), state, "w.pt")
    with pytest.raises(WeightsError, match=r"w\.pt: does not fit .*yolov3\.cfg \(missing"):
        transfer(Darknet("yolov3", num_classes=3), Darknet("yolov3-tiny", num_classes=3).state_dict(), "w.pt")


def test_conversion_cli_round_trip(trained, tmp_path, capsys):
    dw, pt = tmp_path / "exp.weights", tmp_path / "exp.pt"
    assert main(["export", "--weights", trained["last"], "--out", str(dw)]) == 0
    assert main(["import", "--weights", str(dw), "--cfg", "yolov3-tiny", "--out", str(pt)]) == 0
    original, _ = build_model(trained["last"])
    imported = torch.load(pt, weights_only=True)
    for k, v in original.state_dict().items():
        if "num_batches_tracked" not in k:
            assert torch.equal(v, imported[k]), k
    assert main(["import", "--weights", str(dw), "--out", str(pt)]) == 2
    assert "needs --cfg" in capsys.readouterr().err


def test_trainer_starts_from_weights_and_reports_shape_errors(trained, tmp_path, capsys):
    from yolo.train import Trainer
    from yolo.train import main as train_main
    from yolo.train_args import resolve_options
    from yolo.utils import distributed as ddp

    options = dict(data="shapes:n_train=8,n_val=4,img_size=64", img_size=64, batch_size=4, device="cpu", epochs=1,
                   cache_dir=trained["cache_dir"], project=str(tmp_path), verbose=False, weights=trained["last"])
    opt, _ = resolve_options(options)
    trainer = Trainer(opt, ddp.dist_info_from_env(), torch.device("cpu"), None, {})
    trainer.setup()
    source, _ = build_model(trained["last"])
    for k, v in source.state_dict().items():
        assert torch.equal(v, trainer.model.state_dict()[k]), k
    wrong = tmp_path / "wrong.pt"
    torch.save(Darknet("yolov3", num_classes=8).state_dict(), wrong)
    assert train_main(["--weights", str(wrong), "--data", options["data"], "--img-size", "64", "--cache-dir",
                       trained["cache_dir"], "--project", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--weights" in err and "wrong.pt: does not fit" in err
