"""The trainer end to end on a tiny generated dataset (8 train / 4 val images of 64 px, yolov3-tiny, CPU):
result files, exact resume, interruption, 2-process gloo DDP and CLI errors."""
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yolo.train import main, run
from yolo.utils.checkpoint import load_checkpoint, save_checkpoint
from yolo.utils.optim import build_optimizer, set_learning_rates
from yolo.utils.results import RESULTS_COLUMNS
from yolo.utils.run_dir import increment_path

REPO = Path(__file__).resolve().parents[2]
TINY_DATA = "shapes:n_train=8,n_val=4,img_size=64"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("shapes-cache"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def tiny(cache_dir, runs):
    """Options of a small, fast, deterministic run: 2 batches of 4 images per epoch."""
    return dict(data=TINY_DATA, cfg="yolov3-tiny", img_size=64, batch_size=4, device="cpu", workers=0,
                seed=0, epochs=1, cache_dir=cache_dir, project=str(runs), verbose=False)


@pytest.fixture(scope="module")
def full_two_epochs(tiny):
    """The uninterrupted 2-epoch run the resumed runs must reproduce."""
    return run(**{**tiny, "epochs": 2, "name": "full"})


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def final_weights(result):
    ckpt = load_checkpoint(result["last"])
    return ckpt["model"], ckpt["ema"]["model"]


def assert_same_weights(a, b):
    for (model_a, ema_a), (model_b, ema_b) in [(final_weights(a), final_weights(b))]:
        assert model_a.keys() == model_b.keys()
        for k in model_a:
            assert torch.equal(model_a[k], model_b[k]), f"raw weight {k} differs"
            assert torch.equal(ema_a[k], ema_b[k]), f"EMA weight {k} differs"


def test_one_epoch_writes_every_result_file(tiny):
    result = run(**tiny, name="one")
    save_dir = Path(result["save_dir"])
    header, rows = read_csv(save_dir / "results.csv")
    assert header == list(RESULTS_COLUMNS)
    assert len(rows) == 1 and rows[0][0] == "0"
    assert all(math.isfinite(float(v)) for v in rows[0]), rows[0]
    for name in ("results.png", "val_predictions.jpg", "val_labels.jpg", "train_batch0.jpg"):
        with Image.open(save_dir / name) as im:  # a real, readable image
            assert im.size[0] > 0
    for name in ("opt.yaml", "hyp.yaml"):
        assert (save_dir / name).stat().st_size > 0
    last, best = load_checkpoint(save_dir / "weights/last.pt"), load_checkpoint(save_dir / "weights/best.pt")
    assert last["epoch"] == best["epoch"] == 0
    assert last["results"][0]["epoch"] == 0
    assert 0.0 <= result["mAP_0.5"] <= 1 and result["best"] == str(save_dir / "weights/best.pt")
    assert result["time_per_epoch_s"] > 0 and result["peak_mem_mb"] > 0


def test_resume_continues_exactly(tiny, full_two_epochs):
    part = run(**tiny, name="part")  # 1 epoch
    stale = Path(part["last"]).with_name(".best.pt.tmp4194304")  # left by a save killed in a run (pid > pid_max)
    stale.write_bytes(b"")
    resumed = run(resume=part["last"], epochs=2, verbose=False)
    assert not stale.exists()  # removed when the run resumed
    assert resumed["save_dir"] == part["save_dir"]  # same run folder, continued
    _, rows = read_csv(Path(resumed["save_dir"]) / "results.csv")
    _, full_rows = read_csv(Path(full_two_epochs["save_dir"]) / "results.csv")
    assert [r[0] for r in rows] == ["0", "1"]
    # Same seed, workers=0, CPU: every op runs in the same order on the same data, so equality is exact.
    assert [r[1:4] for r in rows] == [r[1:4] for r in full_rows]  # train losses of both epochs
    assert_same_weights(resumed, full_two_epochs)


def test_interrupt_keeps_previous_epoch_and_resumes(tiny, full_two_epochs, tmp_path, capsys):
    def interrupt(epoch, batch, **_):
        if epoch == 1 and batch == 0:  # in the middle of the second epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(**{**tiny, "epochs": 2, "project": str(tmp_path)}, callbacks={"on_train_batch_end": interrupt})
    last = tmp_path / "exp/weights/last.pt"
    assert load_checkpoint(last)["epoch"] == 0  # epoch 1 was lost, epoch 0 kept
    _, rows = read_csv(tmp_path / "exp/results.csv")
    assert len(rows) == 1
    assert f"--resume {last}" in capsys.readouterr().err

    # A bare --resume continues the latest run under --project; epochs=2 comes from the checkpoint.
    assert main(["--resume", "--project", str(tmp_path), "--no-verbose"]) == 0
    assert [r[0] for r in read_csv(tmp_path / "exp/results.csv")[1]] == ["0", "1"]
    assert_same_weights({"last": last}, full_two_epochs)


def test_resume_of_a_finished_run_is_an_error(tiny, full_two_epochs, capsys):
    assert main(["--resume", full_two_epochs["last"]]) == 2
    assert "already trained 2 of 2 epochs" in capsys.readouterr().err


def test_ddp_two_processes_gloo(tiny):
    args = ["--data", TINY_DATA, "--cfg", "yolov3-tiny", "--img-size", "64", "--batch-size", "4",
            "--epochs", "1", "--device", "cpu", "--cache-dir", tiny["cache_dir"], "--project", tiny["project"],
            "--name", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "yolo.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "world size 2" in proc.stdout  # really ran distributed
    run_dirs = sorted(p.name for p in Path(tiny["project"]).glob("ddp*"))
    assert run_dirs == ["ddp"]  # only rank 0 made a run folder
    _, rows = read_csv(Path(tiny["project"]) / "ddp/results.csv")
    assert len(rows) == 1 and all(math.isfinite(float(v)) for v in rows[0])
    assert load_checkpoint(Path(tiny["project"]) / "ddp/weights/last.pt")["epoch"] == 0


@pytest.mark.parametrize("argv, named", [
    (["--cfg", "yolov3-nope"], "yolov3-nope"),
    (["--activation", "swoosh"], "swoosh"),
    (["--data", "no/such/data.yaml"], "no/such/data.yaml"),
    (["--device", "tpu7"], "tpu7"),
    (["--hyp", "no/such/hyp.yaml"], "no/such/hyp.yaml"),
    (["--epochs", "0"], "--epochs"),
    (["--resume", "no/such/last.pt"], "no/such/last.pt"),
])
def test_cli_bad_option_exits_2_naming_it(argv, named, capsys, tmp_path):
    assert main([*argv, "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and named in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_gpu_exits_2_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "yolo.train", "--device", "cuda", "--project", str(tmp_path)],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert "'cuda'" in proc.stderr and "CUDA is not available" in proc.stderr


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 0}, path)

    def interrupted_save(obj, f):
        f.write(b"half a checkpoint")  # save_checkpoint hands torch.save an open file
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 0  # the previous checkpoint survives
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_run_folders_increment(tmp_path):
    assert increment_path(tmp_path / "exp") == tmp_path / "exp"
    for name in ("exp", "exp2", "exp7", "expert"):
        (tmp_path / name).mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp8"
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"


def test_weight_decay_only_on_conv_weights_and_warmup():
    from yolo.models import Darknet

    model = Darknet("yolov3-tiny", num_classes=2)
    optimizer = build_optimizer(model, "sgd", lr0=0.01, momentum=0.937, weight_decay=5e-4)
    other, decay, biases = (g["params"] for g in optimizer.param_groups)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {id(p) for p in decay} == {id(p) for p in convs}
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0, 5e-4, 0]
    assert optimizer.param_groups[0]["nesterov"] and len(other) > 0 and len(biases) > 0
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == \
        sum(p.numel() for p in model.parameters())
    hyp = {"lr0": 0.01, "lrf": 0.01, "momentum": 0.937}
    # Warmup: weights' lr rises from 0, biases' falls from 0.1, accumulation ramps from 1 to its target.
    assert set_learning_rates(optimizer, hyp, epoch=0, epochs=10, ni=0, n_warmup=100, accumulate_target=4) == 1
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0, 0.1]
    assert optimizer.param_groups[0]["momentum"] == pytest.approx(0.8)
    assert set_learning_rates(optimizer, hyp, epoch=5, epochs=10, ni=500, n_warmup=100, accumulate_target=4) == 4
    assert optimizer.param_groups[2]["lr"] == pytest.approx(0.01 * (0.5 * (1 - 0.01) + 0.01))  # cosine midpoint


def test_cli_argparse_error_exits_2():
    with pytest.raises(SystemExit) as e:
        main(["--optimizer", "lbfgs"])
    assert e.value.code == 2


# ---- issue 13: user errors are one line with exit 2, nothing silently wrong ------------------------------------

def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("line, key", [("iou_t: 5", "iou_t"), ("fliplr: 7", "fliplr"), ("scale: 3", "scale"),
                                       ("lr0: .nan", "lr0"), ("lr0: -0.01", "lr0")])
def test_hyp_out_of_range_exits_2_naming_file_and_key(tiny, line, key, tmp_path, capsys):
    hyp = tmp_path / "bad_hyp.yaml"
    hyp.write_text(line + "\n")
    tiny_run = ["--data", TINY_DATA, "--img-size", "64", "--epochs", "1", "--cache-dir", tiny["cache_dir"]]
    assert main(["--hyp", str(hyp), "--project", str(tmp_path), *tiny_run]) == 2  # accepted, it would train
    err = one_line_error(capsys)
    assert "bad_hyp.yaml" in err and f"'{key}'" in err and "must be in" in err


def test_malformed_cfg_exits_2_with_file_and_line(tiny, tmp_path, capsys):
    cfg = tmp_path / "broken.cfg"
    cfg.write_text((REPO / "yolo/cfg/yolov3-tiny.cfg").read_text().replace("[maxpool]", "[maxpool\n", 1))
    argv = ["--cfg", str(cfg), "--data", TINY_DATA, "--cache-dir", tiny["cache_dir"], "--project", str(tmp_path)]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert "broken.cfg:" in err and "malformed section header" in err


def test_resume_from_best_state_dict_or_empty_file_exits_2(full_two_epochs, tmp_path, capsys):
    best = Path(full_two_epochs["save_dir"]) / "weights/best.pt"
    assert main(["--resume", str(best)]) == 2
    err = one_line_error(capsys)
    assert str(best) in err and "inference only" in err and "last.pt" in err
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert main(["--resume", str(empty)]) == 2
    assert "empty.pt: empty file (0 bytes)" in one_line_error(capsys)
    bare = tmp_path / "bare.pt"
    torch.save(load_checkpoint(full_two_epochs["last"])["model"], bare)
    assert main(["--resume", str(bare)]) == 2
    assert "bare.pt is not a trainer checkpoint" in one_line_error(capsys)


def fake_run(project, name, epoch, epochs):
    path = project / name / "weights" / "last.pt"
    save_checkpoint({"epoch": epoch, "opt": {"epochs": epochs}}, path)
    return path


def test_bare_resume_names_its_pick_and_asks_when_ambiguous(tmp_path, capsys):
    from yolo.train_args import pick_resume

    unfinished = fake_run(tmp_path, "a", 0, 3)
    fake_run(tmp_path, "b", 2, 3)  # finished, and written last: the newest last.pt is not the one to continue
    assert pick_resume(str(tmp_path)) == unfinished
    assert f"continuing {unfinished} (1 of 3 epochs done), the only unfinished run" in capsys.readouterr().err
    other = fake_run(tmp_path, "c", 1, 5)
    assert main(["--resume", "--project", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert "2 unfinished runs" in err and str(unfinished) in err and str(other) in err and "give the path" in err


def dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_temporary_files_of_a_killed_save_are_removed_by_the_next(tmp_path):
    path = tmp_path / "last.pt"
    dead = [tmp_path / f".last.pt.tmp{dead_pid()}", tmp_path / ".last.pt.tmp4194304"]  # above pid_max
    dead[0].write_bytes(b"")
    dead[1].write_bytes(b"x" * 1000)
    alive = tmp_path / f".last.pt.tmp{os.getppid()}"  # a live writer's file is left alone
    alive.write_bytes(b"being written")
    other = tmp_path / f".best.pt.tmp{dead_pid()}"  # another checkpoint's: its own next save removes it
    other.write_bytes(b"")
    save_checkpoint({"epoch": 3}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, "last.pt"])
    assert load_checkpoint(path)["epoch"] == 3


def test_run_folder_is_claimed_when_chosen(tmp_path, monkeypatch):
    from yolo.utils import run_dir

    real = run_dir.increment_path
    calls = []

    def racing_increment_path(path, exist_ok=False):
        chosen = real(path, exist_ok)
        if not calls:  # another run creates the chosen folder right after we chose it
            chosen.mkdir(parents=True)
        calls.append(chosen)
        return chosen

    monkeypatch.setattr(run_dir, "increment_path", racing_increment_path)
    assert run_dir.claim_run_dir(tmp_path / "exp") == tmp_path / "exp2"
    assert (tmp_path / "exp2").is_dir()


def test_truncated_val_image_fails_before_the_first_epoch(tiny, tmp_path):
    from yolo.data import DataError

    ok = Image.new("RGB", (64, 48), (90, 160, 30))
    for split in ("train", "val"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "labels").mkdir()
        for i in range(2):
            ok.save(tmp_path / split / "images" / f"{i}.jpg")
            (tmp_path / split / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    noise.save(tmp_path / "val/images/trunc.jpg")  # noise: the scan data is most of the file
    full = (tmp_path / "val/images/trunc.jpg").read_bytes()
    (tmp_path / "val/images/trunc.jpg").write_bytes(full[: len(full) // 2])  # the header check passes it
    (tmp_path / "data.yaml").write_text("train: train/images\nval: val/images\nnames: [thing]\n")
    batches = []
    with pytest.raises(DataError, match=r"val/images/trunc\.jpg"):
        run(**{**tiny, "data": str(tmp_path / "data.yaml"), "project": str(tmp_path / "runs")},
            callbacks={"on_train_batch_end": lambda **kw: batches.append(kw)})
    assert batches == []
