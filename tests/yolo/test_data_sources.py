"""yolo.data sources off the happy path (issues 19 and 20): Darknet .data files with image lists, unreadable
sub-folders, splits a command does not use, a COCO annotations entry that is a folder, and a corrupt image
read by DataLoader workers."""
import numpy as np
import pytest
import torch
from fs_faults import Denied
from PIL import Image

from yolo.data import DataError, MissingDataError, create_dataloader, create_dataset, load_data_config

W, H = 80, 60
BOXES = {"a": [(0, 10, 10, 40, 30)], "b": [(1, 40, 20, 70, 50), (0, 5, 5, 25, 25)], "c": []}


@pytest.fixture
def denied(monkeypatch):
    faults = Denied(monkeypatch)
    yield faults
    faults.restore()


def write_sample(root, split, name, boxes):
    """<root>/images/<split>/<name>.jpg and, darknet-style, <root>/labels/<split>/<name>.txt."""
    img = np.full((H, W, 3), 70, np.uint8)
    for c, x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = (250, 30, 30) if c == 0 else (30, 250, 30)
    path = root / "images" / split / f"{name}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=95)
    label = root / "labels" / split / f"{name}.txt"
    label.parent.mkdir(parents=True, exist_ok=True)
    label.write_text("".join(f"{c} {(x1 + x2) / 2 / W} {(y1 + y2) / 2 / H} {(x2 - x1) / W} {(y2 - y1) / H}\n"
                             for c, x1, y1, x2, y2 in boxes))
    return path


@pytest.fixture
def darknet(tmp_path, monkeypatch):
    """The 2019 layout, run from the repo root: data/tiny.data, data/tiny.names, list files of ../coco paths."""
    repo = tmp_path / "yolov3"
    coco = tmp_path / "coco"
    train = [write_sample(coco, "train", n, BOXES[n]) for n in ("a", "b")]
    val = [write_sample(coco, "val", "c", BOXES["c"])]
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "tiny_train.txt").write_text("".join(f"../coco/images/train/{p.name}\n" for p in train))
    (repo / "data" / "tiny_val.txt").write_text("".join(f"../coco/images/val/{p.name}\n" for p in val))
    (repo / "data" / "tiny.names").write_text("red\ngreen\n")
    (repo / "data" / "tiny.data").write_text(
        "classes=2\ntrain=data/tiny_train.txt\nvalid=data/tiny_val.txt\nnames=data/tiny.names\n"
        "backup=backup/\neval=coco\n")
    monkeypatch.chdir(repo)  # darknet's relative paths are relative to where it runs
    return repo / "data" / "tiny.data", train, val


def test_darknet_data_file_reads_like_a_yaml_with_the_same_lists(darknet, tmp_path):
    data, train, val = darknet
    cfg = load_data_config("data/tiny.data")
    assert cfg["names"] == ["red", "green"] and cfg["nc"] == 2
    # the same image lists given through a YAML (whose list entries are relative to the list file)
    yaml_lists = tmp_path / "lists"
    yaml_lists.mkdir()
    (yaml_lists / "train.txt").write_text("".join(f"{p}\n" for p in train))
    (yaml_lists / "val.txt").write_text("".join(f"{p}\n" for p in val))
    (yaml_lists / "d.yaml").write_text("train: train.txt\nval: val.txt\nnames: [red, green]\n")
    twin = load_data_config(yaml_lists / "d.yaml")
    for split in ("train", "val"):
        a = create_dataset(cfg[split], cfg["names"], 64, augment=False, hyp=None)
        b = create_dataset(twin[split], twin["names"], 64, augment=False, hyp=None)
        assert [s.path for s in a.samples] == [str(p) for p in (train if split == "train" else val)]
        for (ia, la, _), (ib, lb, _) in zip(a, b):
            assert torch.equal(ia, ib) and torch.equal(la, lb)
    boxes = create_dataset(cfg["train"], cfg["names"], 64, augment=False, hyp=None).samples[1].boxes
    assert np.allclose(boxes, [b[1:] for b in BOXES["b"]], atol=1e-4)  # labels/ beside images/ were read


def test_darknet_paths_relative_to_the_data_file_when_run_elsewhere(darknet, tmp_path, monkeypatch):
    data, train, _ = darknet
    (data.parent / "here.data").write_text(f"classes=2\ntrain=tiny_train.txt\nvalid={data.parent / 'tiny_val.txt'}\n"
                                           "names=tiny.names\n")
    (data.parent / "tiny_train.txt").write_text("".join(f"{p}\n" for p in train))
    monkeypatch.chdir(tmp_path)
    cfg = load_data_config(data.parent / "here.data")
    assert cfg["names"] == ["red", "green"]
    samples = create_dataset(cfg["train"], cfg["names"], 64, augment=False, hyp=None).samples
    assert [s.path for s in samples] == list(map(str, train))


@pytest.mark.parametrize("edit, named", [
    (lambda t: t.replace("classes=2", "classes=3"), "classes=3 but data/tiny.names names 2"),
    (lambda t: t.replace("names=data/tiny.names", "names=data/nope.names"), "data/nope.names"),
    (lambda t: t.replace("train=data/tiny_train.txt", "train=data/nope.txt"), "data/nope.txt"),
    (lambda t: t.replace("valid=data/tiny_val.txt\n", ""), "'valid='"),
    (lambda t: t + "this line has no equals sign\n", "line 7"),
])
def test_darknet_data_errors_name_file_and_key(darknet, edit, named):
    data, _, _ = darknet
    data.write_text(edit(data.read_text()))
    with pytest.raises(DataError) as e:
        load_data_config(data)
    assert "tiny.data" in str(e.value) and named in str(e.value) and "\n" not in str(e.value)


def test_darknet_list_entry_missing_names_list_and_line(darknet):
    data, _, _ = darknet
    with open(data.parent / "tiny_train.txt", "a") as f:
        f.write("../coco/images/train/ghost.jpg\n")
    cfg = load_data_config(data)
    with pytest.raises(MissingDataError, match=r"ghost\.jpg"):
        create_dataset(cfg["train"], cfg["names"], 64, augment=False, hyp=None)


def test_unused_test_split_may_be_missing_but_a_used_one_may_not(tmp_path):
    write_sample(tmp_path, "train", "a", BOXES["a"])
    write_sample(tmp_path, "val", "c", BOXES["c"])
    yaml_file = tmp_path / "coco.yaml"
    yaml_file.write_text("train: images/train\nval: images/val\ntest: test-dev2017.txt\nnames: [red, green]\n")
    cfg = load_data_config(yaml_file)  # trainer: train and val
    assert cfg["val"]["sources"] == [str(tmp_path / "images" / "val")]
    with pytest.raises(MissingDataError, match=r"coco\.yaml: test: .*test-dev2017\.txt"):
        load_data_config(yaml_file, splits=("test",))  # yolo.val --task test
    assert load_data_config(yaml_file, splits=("val",))["val"]["format"] == "yolo"


def test_unreadable_sub_folder_is_an_error_naming_it(tmp_path, denied):
    for name in ("a", "b"):
        write_sample(tmp_path, "train", name, BOXES[name])
    hidden = write_sample(tmp_path / "images" / "train", "more", "c", BOXES["c"]).parent
    denied.unreadable_path(hidden)
    with pytest.raises(DataError) as e:
        create_dataset(str(tmp_path / "images" / "train"), ["red", "green"], 64, augment=False, hyp=None)
    assert str(hidden) in str(e.value) and "ermission denied" in str(e.value)


def test_coco_annotations_entry_that_is_a_folder(tmp_path):
    write_sample(tmp_path, "train", "a", BOXES["a"])
    (tmp_path / "annotations").mkdir()
    with pytest.raises(DataError, match=r"annotations.*is a folder"):
        create_dataset({"images": str(tmp_path / "images" / "train"), "annotations": str(tmp_path / "annotations")},
                       ["red", "green"], 64, augment=False, hyp=None)


def test_unreadable_data_yaml_names_it(tmp_path, denied):
    yaml_file = tmp_path / "d.yaml"
    yaml_file.write_text("train: .\nval: .\nnames: [a]\n")
    denied.unreadable_path(yaml_file)
    with pytest.raises(DataError, match=r"d\.yaml: .*ermission denied"):
        load_data_config(yaml_file)


def test_corrupt_image_in_a_worker_gives_the_same_one_line_error(tmp_path):
    for name in ("a", "b"):
        write_sample(tmp_path, "train", name, BOXES[name])
    bad = tmp_path / "images" / "train" / "b.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])  # passes the header check, fails to decode
    messages = []
    for workers in (0, 2):
        loader, _ = create_dataloader(str(tmp_path / "images" / "train"), ["red", "green"], 64, 2, augment=False,
                                      hyp=None, workers=workers)
        with pytest.raises(DataError) as e:
            next(iter(loader))
        messages.append(str(e.value))
    assert messages[0] == messages[1] and "b.jpg" in messages[1] and "\n" not in messages[1]


def test_trainer_runs_on_a_darknet_data_file(darknet, tmp_path):
    from yolo.train import main

    assert main(["--data", "data/tiny.data", "--img-size", "64", "--batch-size", "2", "--epochs", "1", "--device",
                 "cpu", "--project", str(tmp_path / "runs"), "--no-verbose"]) == 0
    from yolo.utils.checkpoint import load_checkpoint

    last = load_checkpoint(tmp_path / "runs/exp/weights/last.pt")
    assert last["names"] == ["red", "green"] and last["opt"]["data"] == str(darknet[0])  # absolute: resumable


def test_bad_darknet_data_file_on_the_command_line_is_one_line(darknet, tmp_path, capsys):
    from yolo.train import main

    data, _, _ = darknet
    data.write_text(data.read_text().replace("names=data/tiny.names", "names=data/nope.names"))
    assert main(["--data", "data/tiny.data", "--project", str(tmp_path / "runs"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tiny.data: names=data/nope.names: not found" in err
    assert not (tmp_path / "runs").exists()
