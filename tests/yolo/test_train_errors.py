"""The commands' one-line contract off the happy path (issue 19): a diverging run saves nothing non-finite, and
unreadable files, read-only folders, a full disk, a resume whose data changed, a bad backend name and a
corrupt image in a worker are each one line naming the file or value, exit status 2, never a traceback."""
import errno
from pathlib import Path

import numpy as np
import pytest
import torch
from fs_faults import Denied
from matplotlib.figure import Figure
from PIL import Image

from yolo import detect as detect_cli
from yolo import train as train_mod
from yolo import weights as weights_cli
from yolo.hyp import load_hyp
from yolo.train import load_run_hyp, main, run
from yolo.utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = ["--img-size", "64", "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--workers", "0",
        "--no-verbose"]


@pytest.fixture
def denied(monkeypatch):
    faults = Denied(monkeypatch)
    yield faults
    faults.restore()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A YOLO-txt data set of 8 train / 2 val images, 64 x 48, two classes, and its data.yaml."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir()
        for i in range(n):
            pixels = rng.integers(40, 90, (48, 64, 3), dtype=np.uint8)
            pixels[10:30, 8 + 4 * i:30 + 4 * i] = (230, 40, 40)
            Image.fromarray(pixels).save(root / split / "images" / f"{i}.jpg", quality=95)
            (root / split / "labels" / f"{i}.txt").write_text(f"{i % 2} {(19 + 4 * i) / 64} {20 / 48} {22 / 64} "
                                                              f"{20 / 48}\n")
    (root / "data.yaml").write_text("train: train/images\nval: val/images\nnames: [red, blue]\n")
    return root


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def argv(dataset, tmp_path, *extra):
    return ["--data", str(dataset / "data.yaml"), "--project", str(tmp_path / "runs"), *TINY, *extra]


def all_finite(path):
    ckpt = load_checkpoint(path)
    tensors = list(ckpt["ema"]["model"].values()) + list(ckpt.get("model", {}).values())
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


# ---- numbers ----------------------------------------------------------------------------------------------------

def test_hyp_number_in_e_notation_is_a_number(tmp_path):
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("lr0: 1e-3\nweight_decay: 5e-4\n")  # PyYAML reads both as strings
    assert load_hyp(hyp)["lr0"] == 0.001 and load_hyp(hyp)["weight_decay"] == 0.0005
    assert load_run_hyp(str(hyp), "adam")["lr0"] == 0.001  # the file's lr0, not Adam's default
    hyp.write_text("lr0: fast\n")
    with pytest.raises(ValueError, match="'lr0' must be a number, got 'fast'"):
        load_hyp(hyp)


def test_diverging_run_stops_on_one_line_and_saves_nothing_non_finite(dataset, tmp_path, capsys):
    hyp = tmp_path / "hot.yaml"
    hyp.write_text("lr0: 1000000.0\nwarmup_epochs: 0\n")
    assert main(argv(dataset, tmp_path, "--hyp", str(hyp), "--epochs", "2", "--accumulate", "1")) == 1
    err = one_line_error(capsys)
    assert "diverged" in err or "non-finite" in err
    saved = list((tmp_path / "runs").rglob("*.pt"))
    assert all(all_finite(p) for p in saved), saved
    assert ("no checkpoint was written" in err) == (not saved)


def test_divergence_after_a_good_epoch_keeps_that_epoch(dataset, tmp_path, monkeypatch):
    real_step = train_mod.Trainer.optimizer_step
    second_epoch = []

    def poisoned_step(self):  # from the second epoch on, a step leaves a NaN weight (as an overflow would)
        real_step(self)
        if second_epoch:
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = float("nan")

    monkeypatch.setattr(train_mod.Trainer, "optimizer_step", poisoned_step)
    options = dict(data=str(dataset / "data.yaml"), project=str(tmp_path), img_size=64, batch_size=4, epochs=2,
                   device="cpu", verbose=False)
    with pytest.raises(FloatingPointError) as e:
        run(**options, callbacks={"on_epoch_end": lambda epoch, **_: second_epoch.append(epoch)})
    last = tmp_path / "exp/weights/last.pt"
    assert f"{last} keeps epoch 0" in str(e.value) and "epoch 1" in str(e.value)
    assert load_checkpoint(last)["epoch"] == 0 and all_finite(last) and all_finite(last.with_name("best.pt"))


# ---- unreadable files, read-only folders, a full disk -------------------------------------------------------------

@pytest.mark.parametrize("what", ["data", "hyp", "cfg"])
def test_unreadable_input_file_is_one_line_naming_it(dataset, tmp_path, denied, capsys, what):
    files = {"data": tmp_path / "data.yaml", "hyp": tmp_path / "hyp.yaml", "cfg": tmp_path / "tiny.cfg"}
    files["data"].write_text(f"path: {dataset}\n" + (dataset / "data.yaml").read_text())
    files["hyp"].write_text("lr0: 0.001\n")
    files["cfg"].write_text((REPO / "yolo/cfg/yolov3-tiny.cfg").read_text())
    denied.unreadable_path(files[what])
    args = argv(dataset, tmp_path, "--hyp", str(files["hyp"]), "--cfg", str(files["cfg"]))
    args[1] = str(files["data"])
    assert main(args) == 2
    err = one_line_error(capsys)
    assert str(files[what]) in err and "ermission denied" in err


@pytest.mark.parametrize("where", ["project", "cache-dir"])
def test_read_only_output_folder_is_one_line_naming_it(dataset, tmp_path, denied, capsys, where):
    read_only = denied.read_only_folder(tmp_path / "ro")
    args = argv(dataset, tmp_path)
    if where == "project":
        args += ["--project", str(read_only / "runs")]
    else:  # the generated data set goes into the cache
        args += ["--data", "shapes:n_train=4,n_val=2,img_size=64", "--cache-dir", str(read_only / "cache")]
    assert main(args) == 2
    err = one_line_error(capsys)
    assert str(read_only) in err and "ermission denied" in err
    assert not any(read_only.iterdir())


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full (every write: ENOSPC)")
def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(dataset, tmp_path, monkeypatch, capsys):
    real_save = torch.save
    saves = []

    def save_on_a_disk_that_fills(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) <= 2:  # epoch 0: last.pt and best.pt fit
            return real_save(obj, f, *args, **kwargs)
        with open("/dev/full", "wb") as full:  # from then on every write fails as on a full disk (ENOSPC)
            return real_save(obj, full, *args, **kwargs)

    def savefig_on_a_full_disk(self, fname, *args, **kwargs):
        open(fname, "wb").close()
        raise OSError(errno.ENOSPC, "No space left on device", str(fname))

    monkeypatch.setattr(torch, "save", save_on_a_disk_that_fills)
    monkeypatch.setattr(Figure, "savefig", savefig_on_a_full_disk)
    assert main(argv(dataset, tmp_path, "--epochs", "2")) == 2
    err = one_line_error(capsys)
    run_dir = tmp_path / "runs/exp"
    assert str(run_dir / "weights/last.pt") in err and "No space left on device" in err
    assert load_checkpoint(run_dir / "weights/last.pt")["epoch"] == 0
    png = run_dir / "results.png"
    assert not png.exists() or png.stat().st_size > 0  # never a 0-byte picture
    assert not [p.name for p in run_dir.rglob(".*tmp*")]  # no temporary files left


def test_detect_and_export_into_read_only_folders(trained, tmp_path, denied, capsys):
    read_only = denied.read_only_folder(tmp_path / "ro")
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 48), (90, 20, 20)).save(image)
    assert detect_cli.main(["--weights", trained["best"], "--source", str(image), "--project",
                            str(read_only / "runs"), "--device", "cpu", "--no-verbose"]) == 2
    assert str(read_only / "runs") in one_line_error(capsys)
    assert weights_cli.main(["export", "--weights", trained["best"], "--out", str(read_only / "m.weights")]) == 2
    err = one_line_error(capsys)
    assert str(read_only / "m.weights") in err and "ermission denied" in err
    assert not any(read_only.iterdir())


# ---- resume, backend, workers -------------------------------------------------------------------------------------

def test_resume_after_the_data_gained_a_class_is_one_line(dataset, tmp_path, capsys):
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {dataset}\ntrain: train/images\nval: val/images\nnames: [red, blue]\n")
    first = run(data=str(data), project=str(tmp_path), img_size=64, batch_size=4, epochs=1, device="cpu",
                verbose=False)
    data.write_text(data.read_text().replace("[red, blue]", "[red, blue, green]"))
    assert main(["--resume", first["last"], "--epochs", "2"]) == 2
    err = one_line_error(capsys)
    assert "trained on 2 classes" in err and "now has 3" in err and "--weights" in err


def test_unknown_backend_in_the_environment_fails_before_the_run_folder(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SWISHKERNELS_BACKEND", "garbage")
    assert main(argv(dataset, tmp_path, "--activation", "swish")) == 2
    err = one_line_error(capsys)
    assert "SWISHKERNELS_BACKEND" in err and "'garbage'" in err
    assert not (tmp_path / "runs").exists()


def test_corrupt_image_with_workers_is_one_line_like_without(dataset, tmp_path, capsys):
    data = tmp_path / "data.yaml"
    (tmp_path / "train/images").mkdir(parents=True)
    (tmp_path / "train/labels").symlink_to(dataset / "train/labels")
    for p in (dataset / "train/images").iterdir():
        (tmp_path / "train/images" / p.name).write_bytes(p.read_bytes())
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    noise.save(tmp_path / "train/images/3.jpg")
    full = (tmp_path / "train/images/3.jpg").read_bytes()
    (tmp_path / "train/images/3.jpg").write_bytes(full[: len(full) // 2])  # the header check passes it
    data.write_text(f"train: train/images\nval: {dataset}/val/images\nnames: [red, blue]\n")
    errors = []
    for workers in ("0", "2"):
        assert main(argv(dataset, tmp_path, "--data", str(data), "--workers", workers)) == 2
        errors.append(one_line_error(capsys))
    assert errors[0] == errors[1] and "3.jpg" in errors[1]
