"""fuse_bn_swish on the Darknet models: unchanged outputs and gradients, and the memory targets."""
import torch

import swishkernels as sk
from helpers import saved_activation_bytes
from yolo.models import Darknet


def _saved_activation_mb(model, x, recompute=False):
    return saved_activation_bytes(model, x, recompute) / 2**20

def test_fused_darknet_matches_unfused():
    torch.manual_seed(0)
    model = Darknet("yolov3-tiny", num_classes=3, activation="swish").double().train()
    fused = Darknet("yolov3-tiny", num_classes=3, activation="swish").double().train()
    fused.load_state_dict(model.state_dict())
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert len(sk.fuse_bn_swish(fused).fused) == n_bn
    fused.load_state_dict(model.state_dict())  # same keys after fusing
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    outputs, fused_outputs = model(x), fused(x)
    for a, b in zip(outputs, fused_outputs):
        torch.testing.assert_close(b, a)
    sum(o.square().sum() for o in outputs).backward()
    sum(o.square().sum() for o in fused_outputs).backward()
    for (name, p), q in zip(model.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_yolov3_saved_bytes_targets():
    """Issue 6's yolov3 targets, at batch 1 / 128 px (saved activations scale with batch and area, so
    the ratios carry over to batch 8 / 320 px; benchmarks/memory.py reports those sizes)."""
    x = torch.rand(1, 3, 128, 128)
    torch.manual_seed(0)
    leaky = _saved_activation_mb(Darknet("yolov3", activation="leaky").train(), x)
    fused_model = Darknet("yolov3", activation="swish").train()
    sk.fuse_bn_swish(fused_model)
    fused = _saved_activation_mb(fused_model, x)
    recompute_model = Darknet("yolov3", activation="swish").train()
    sk.fuse_bn_swish(recompute_model, recompute=True)
    recompute = _saved_activation_mb(recompute_model, x, recompute=True)
    assert fused <= leaky
    assert recompute <= 0.6 * leaky


def test_trainer_fuse_bn_trains_like_unfused(tmp_path):
    """--fuse-bn and --fuse-bn-recompute change memory, not the training: same seed, same losses."""
    from yolo.train import run

    common = dict(data="shapes:n_train=8,n_val=4,img_size=64", img_size=64, batch_size=4, epochs=1, device="cpu",
                  activation="swish", seed=0, cache_dir=str(tmp_path / "cache"), project=str(tmp_path / "runs"),
                  verbose=False, notest=True)
    plain = run(name="plain", **common)["train_loss"]
    fused = run(name="fused", fuse_bn=True, **common)["train_loss"]
    recomputed = run(name="recompute", fuse_bn_recompute=True, **common)["train_loss"]
    # fp32: the fused kernel sums BatchNorm statistics in another order than ATen's BatchNorm.
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(plain), rtol=1e-4, atol=1e-4)
    assert recomputed == fused  # recomputation is bit-identical


def test_trainer_fuse_bn_needs_swish(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "yolo.train", "--fuse-bn", "--activation", "leaky", "--epochs", "1",
                             "--data", "shapes:n_train=8,n_val=4,img_size=64", "--img-size", "64", "--device", "cpu",
                             "--cache-dir", str(tmp_path), "--project", str(tmp_path / "runs")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "--fuse-bn" in result.stderr and "swish" in result.stderr and "Traceback" not in result.stderr
