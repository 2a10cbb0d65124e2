"""yolo.data: the generated shapes set, data configs, COCO and YOLO-txt sources, letterbox and augmentation
geometry, batching, distributed sampling, and clear errors for bad input."""
import contextlib
import hashlib
import io
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from yolo.data import (
    DataError,
    MissingDataError,
    collate,
    create_dataloader,
    create_dataset,
    load_data_config,
    make_shapes_dataset,
)
from yolo.data import shapes as shapes_mod
from yolo.data.augment import filter_boxes, letterbox

NO_AUG = dict(hsv_h=0, hsv_s=0, hsv_v=0, degrees=0, translate=0, scale=0, shear=0, fliplr=0)
BG, WHITE, GREEN = (60, 60, 60), (255, 255, 255), (40, 200, 60)
W, H = 160, 100                                        # synthetic image: landscape, so letterbox pads top/bottom
RECTS = [((30, 20, 70, 60), 0, WHITE), ((90, 40, 130, 80), 1, GREEN)]   # (x1, y1, x2, y2), class, colour


# ---- helpers ---------------------------------------------------------------------------------------------------

def write_image(path, rects=RECTS, size=(W, H)):
    img = np.full((size[1], size[0], 3), BG, np.uint8)
    for (x1, y1, x2, y2), _, colour in rects:
        img[y1:y2, x1:x2] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def yolo_line(box, cls, w=W, h=H):
    x1, y1, x2, y2 = box
    return f"{cls} {(x1 + x2) / 2 / w!r} {(y1 + y2) / 2 / h!r} {(x2 - x1) / w!r} {(y2 - y1) / h!r}"


def write_yolo_sample(root, name, rects=RECTS, lines=None):
    """images/<name>.png with labels/<name>.txt; `lines` overrides the (correct) label lines."""
    img = write_image(root / "images" / f"{name}.png", rects)
    lines = [yolo_line(b, c) for b, c, _ in rects] if lines is None else lines
    (root / "labels").mkdir(exist_ok=True)
    (root / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return img


def colour_box(img, colour):
    """Pixel extent [x1, y1, x2, y2) of `colour` in a (3, H, W) uint8 tensor."""
    diff = (img.permute(1, 2, 0).int() - torch.tensor(colour)).abs().max(-1).values
    ys, xs = torch.nonzero(diff < 60, as_tuple=True)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def label_boxes(labels, w, h):
    """(n, 5) normalized [cls, xc, yc, w, h] -> (n, 4) pixel x1 y1 x2 y2."""
    lab = labels.numpy().astype(float)
    return np.stack([(lab[:, 1] - lab[:, 3] / 2) * w, (lab[:, 2] - lab[:, 4] / 2) * h,
                     (lab[:, 1] + lab[:, 3] / 2) * w, (lab[:, 2] + lab[:, 4] / 2) * h], 1)


def content_hash(root):
    """Hash of the image files and annotations (not the info block, which records the parameters)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix == ".jpg":
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
        elif p.name.startswith("instances_"):
            h.update(json.dumps(json.loads(p.read_text())["annotations"]).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "ds", n_train=24, n_val=8, img_size=96,
                               progress=False)


@pytest.fixture(scope="module")
def shapes_cfg(shapes_root):
    return {split: {"images": str(shapes_root / "images" / split),
                    "annotations": str(shapes_root / "annotations" / f"instances_{split}.json")}
            for split in ("train", "val")}


@pytest.fixture
def synthetic(tmp_path):
    write_yolo_sample(tmp_path, "a")
    return str(tmp_path / "images")


# ---- shapes ----------------------------------------------------------------------------------------------------

def test_shapes_deterministic_from_seed(tmp_path):
    small = dict(n_train=3, n_val=2, img_size=64, progress=False)
    a = content_hash(make_shapes_dataset(tmp_path / "a", seed=0, **small))
    b = content_hash(make_shapes_dataset(tmp_path / "b", seed=0, **small))
    c = content_hash(make_shapes_dataset(tmp_path / "c", seed=1, **small))
    assert a == b
    assert a != c


def test_shapes_is_valid_coco_with_boxes_inside_and_every_class(shapes_root):
    from pycocotools.coco import COCO

    for split, n in (("train", 24), ("val", 8)):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(shapes_root / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == n
        assert all((shapes_root / "images" / split / img["file_name"]).is_file() for img in coco.dataset["images"])
        for ann in coco.dataset["annotations"]:
            img = coco.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
            assert w >= 5 and h >= 5 and 0 < ann["area"] <= w * h
    train = json.loads((shapes_root / "annotations" / "instances_train.json").read_text())
    assert {a["category_id"] for a in train["annotations"]} == {c["id"] for c in train["categories"]}
    assert [c["name"] for c in train["categories"]] == list(shapes_mod.CLASSES)


def test_shapes_boxes_are_tight_around_the_drawn_shape(monkeypatch):
    """On a black background in white, one shape per image: its box is exactly the extent of its pixels."""
    monkeypatch.setattr(shapes_mod, "_background", lambda rng, w, h: Image.new("RGB", (w, h)))
    monkeypatch.setattr(shapes_mod, "_contrasting_colour", lambda rng, under: (255, 255, 255))
    params = shapes_mod.shapes_params(min_objects=1, max_objects=1, img_size=96)
    seen = set()
    for i in range(80):
        image, [(cls, (x, y, w, h), area)] = shapes_mod.render_image(np.random.default_rng(i), params)
        ys, xs = np.nonzero(np.asarray(image)[..., 0])
        assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] == [x, y, w, h]
        assert area == len(xs)
        seen.add(cls)
    assert seen == set(range(len(shapes_mod.CLASSES)))


def test_shapes_generation_is_atomic(tmp_path, monkeypatch):
    calls = []
    real = shapes_mod.render_image

    def failing(rng, params):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return real(rng, params)

    monkeypatch.setattr(shapes_mod, "render_image", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        make_shapes_dataset(tmp_path / "ds", n_train=4, n_val=2, img_size=64, progress=False)
    assert list(tmp_path.iterdir()) == []   # neither the dataset nor its temp folder is left


def test_shapes_generation_race_keeps_the_finished_copy(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    real = shapes_mod._write_dataset

    def racing(out, params, progress):
        real(out, params, progress)
        shutil.copytree(out, root)   # another process (a DDP rank) renamed its copy in first

    monkeypatch.setattr(shapes_mod, "_write_dataset", racing)
    assert make_shapes_dataset(root, n_train=2, n_val=1, img_size=64, progress=False) == root
    assert [p.name for p in tmp_path.iterdir()] == ["ds"] and (root / "dataset.json").is_file()


def test_shapes_cache_is_reused_and_located_by_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SWISHKERNELS_CACHE", str(tmp_path / "env-cache"))
    cfg = load_data_config("shapes:n_train=3, n_val=2,img_size=64")
    assert cfg["names"] == list(shapes_mod.CLASSES) and cfg["nc"] == len(shapes_mod.CLASSES)
    root = tmp_path / "env-cache"
    (folder,) = root.iterdir()
    assert folder.name.startswith(f"shapes-v{shapes_mod.VERSION}-")
    assert cfg["train"]["format"] == "coco" and cfg["train"]["images"].startswith(str(folder))

    def no_regeneration(*a, **k):
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(shapes_mod, "_write_dataset", no_regeneration)
    assert load_data_config("shapes:n_train=3,n_val=2,img_size=64") == cfg
    yaml_file = tmp_path / "shapes.yaml"
    yaml_file.write_text("shapes: {n_train: 3, n_val: 2, img_size: 64}\n")
    assert load_data_config(yaml_file) == cfg   # the YAML form names the same dataset
    # cache_dir wins over the environment; other parameters are another dataset
    with pytest.raises(AssertionError, match="regenerated"):
        load_data_config("shapes:n_train=3,n_val=2,img_size=64", cache_dir=tmp_path / "elsewhere")
    with pytest.raises(AssertionError, match="regenerated"):
        load_data_config("shapes:n_train=3,n_val=2,img_size=64,seed=1")


def test_shapes_bad_overrides_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown shapes parameter"):
        load_data_config("shapes:n_trian=3", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="key=value"):
        load_data_config("shapes:n_train", cache_dir=tmp_path)


# ---- data YAML -------------------------------------------------------------------------------------------------

def test_yaml_config_resolves_splits_and_names(tmp_path, shapes_root, synthetic):
    (tmp_path / "cfg").mkdir()
    yaml_file = tmp_path / "cfg" / "data.yaml"
    yaml_file.write_text(f"path: {shapes_root}\n"
                         "train: {images: images/train, annotations: annotations/instances_train.json}\n"
                         f"val: [{synthetic}]\n"
                         "names: {0: a, 1: b}\n")
    cfg = load_data_config(yaml_file)
    assert cfg["names"] == ["a", "b"] and cfg["nc"] == 2
    assert cfg["train"] == {"format": "coco", "images": str(shapes_root / "images" / "train"),
                            "annotations": str(shapes_root / "annotations" / "instances_train.json")}
    assert cfg["val"] == {"format": "yolo", "sources": [synthetic]}
    # names may be omitted for COCO splits: they come from the json categories
    yaml_file.write_text(f"path: {shapes_root}\n"
                         "train: {images: images/train, annotations: annotations/instances_train.json}\n"
                         "val: {images: images/val, annotations: annotations/instances_val.json}\n")
    assert load_data_config(yaml_file)["names"] == list(shapes_mod.CLASSES)


def test_yaml_config_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_data_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_data_config(bad)
    missing = tmp_path / "missing.yaml"
    missing.write_text("train: images/train\nval: images/val\nnames: [a]\n")
    with pytest.raises(FileNotFoundError, match=r"images/train"):
        load_data_config(missing)


# ---- geometry --------------------------------------------------------------------------------------------------

def test_letterbox_geometry_maps_back_to_original_pixels(synthetic):
    ds = create_dataset(synthetic, ["a", "b"], 128, augment=False, hyp=None)
    img, labels, meta = ds[0]
    assert img.shape == (3, 128, 128) and img.dtype == torch.uint8
    assert meta["orig_shape"] == (H, W) and meta["image_id"] == 1 and meta["path"].endswith("a.png")
    assert meta["ratio"] == (0.8, 0.8) and meta["pad"] == (0, 24)
    assert (img[:, :24] == 114).all() and (img[:, 104:] == 114).all()   # grey bars above and below
    boxes = label_boxes(labels, 128, 128)
    for box, (rect, cls, colour) in zip(boxes, RECTS):
        assert np.abs(box - colour_box(img, colour)).max() <= 1.0          # labels sit on the objects
        back = (box - [*meta["pad"], *meta["pad"]]) / [*meta["ratio"], *meta["ratio"]]
        assert np.abs(back - rect).max() <= 1.0                          # and map back to the original
    assert labels[:, 0].tolist() == [0, 1]


def test_rect_letterbox_pads_to_stride_only():
    img = np.zeros((100, 160, 3), np.uint8)
    out, ratio, pad = letterbox(img, 128, stride=32)
    assert out.shape == (96, 128, 3) and pad == (0, 8) and ratio == (0.8, 0.8)


def test_flip_mirrors_boxes_with_the_image(synthetic):
    plain = create_dataset(synthetic, ["a", "b"], 128, augment=False, hyp=None)[0][1]
    img, labels, _ = create_dataset(synthetic, ["a", "b"], 128, augment=True, hyp={**NO_AUG, "fliplr": 1.0})[0]
    assert torch.allclose(labels[:, 1], 1 - plain[:, 1]) and torch.allclose(labels[:, 2:], plain[:, 2:])
    for box, (_, _, colour) in zip(label_boxes(labels, 128, 128), RECTS):
        assert np.abs(box - colour_box(img, colour)).max() <= 1.0


def test_random_affine_keeps_boxes_on_the_objects(synthetic):
    hyp = {**NO_AUG, "degrees": 10, "translate": 0.05, "scale": 0.1, "shear": 2}
    ds = create_dataset(synthetic, ["a", "b"], 128, augment=True, hyp=hyp)
    plain = create_dataset(synthetic, ["a", "b"], 128, augment=False, hyp=None)[0][1]
    torch.manual_seed(0)
    seen = []
    for _ in range(5):
        img, labels, _ = ds[0]
        assert len(labels) == 2 and not torch.allclose(labels, plain)   # moved, none lost
        assert not any(torch.allclose(labels, other) for other in seen)   # a new draw each time
        seen.append(labels)
        for box, (_, _, colour) in zip(label_boxes(labels, 128, 128), RECTS):
            # a rectangle's extreme points are its corners, so the transformed box is exact up to resampling
            assert np.abs(box - colour_box(img, colour)).max() <= 2.0


@pytest.mark.parametrize("key", ["hsv_h", "hsv_s", "hsv_v"])
def test_hsv_changes_colours_not_labels(synthetic, key):
    ds = create_dataset(synthetic, ["a", "b"], 128, augment=True, hyp={**NO_AUG, key: 0.5})
    plain_img, plain_labels, _ = create_dataset(synthetic, ["a", "b"], 128, augment=False, hyp=None)[0]
    x1, y1, x2, y2 = colour_box(plain_img, GREEN).astype(int)
    torch.manual_seed(0)
    change = 0.0
    for _ in range(5):
        img, labels, _ = ds[0]
        assert torch.equal(labels, plain_labels)
        diff = (img[:, y1:y2, x1:x2].float() - plain_img[:, y1:y2, x1:x2].float()).abs().mean().item()
        change = max(change, diff)
    assert change > 10   # well above the rounding of an RGB -> HSV -> RGB round trip


def test_boxes_pushed_off_the_image_are_clipped_or_dropped():
    before = np.array([[10, 10, 30, 30]] * 4, float)
    after = np.array([[-40, 10, -20, 30], [-27, 10, 3, 30], [-10, 10, 10, 30], [5, 5, 25, 25]], float)
    keep, clipped = filter_boxes(before, after, 64, 64)
    assert keep.tolist() == [False, False, True, True]   # gone, 15% left, half left, inside
    assert clipped[2].tolist() == [0, 10, 10, 30]


def test_augmented_labels_are_normalized(shapes_cfg):
    from yolo.hyp import DEFAULT_HYP

    ds = create_dataset(shapes_cfg["train"], list(shapes_mod.CLASSES), 96, augment=True,
                        hyp={**DEFAULT_HYP, "degrees": 20, "translate": 0.2, "scale": 0.5, "shear": 5})
    torch.manual_seed(1)
    n = 0
    for i in range(len(ds)):
        _, labels, _ = ds[i]
        n += len(labels)
        xc, yc, w, h = labels[:, 1:].T
        assert (w > 0).all() and (h > 0).all()
        assert (xc - w / 2 >= -1e-6).all() and (xc + w / 2 <= 1 + 1e-6).all()
        assert (yc - h / 2 >= -1e-6).all() and (yc + h / 2 <= 1 + 1e-6).all()
        assert ((labels[:, 0] >= 0) & (labels[:, 0] < len(shapes_mod.CLASSES))).all()
    assert n > len(ds)   # most objects survive


# ---- sources ---------------------------------------------------------------------------------------------------

def test_yolo_txt_and_coco_sources_give_the_same_items(tmp_path, shapes_root, shapes_cfg):
    gt = json.loads((shapes_root / "annotations" / "instances_val.json").read_text())
    for img in gt["images"]:
        dst = tmp_path / "images" / "val" / img["file_name"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shapes_root / "images" / "val" / img["file_name"], dst)
        lines = [yolo_line((a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]),
                           a["category_id"] - 1, img["width"], img["height"])
                 for a in gt["annotations"] if a["image_id"] == img["id"]]
        label = tmp_path / "labels" / "val" / img["file_name"].replace(".jpg", ".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines))
    names = list(shapes_mod.CLASSES)
    coco = create_dataset(shapes_cfg["val"], names, 96, augment=False, hyp=None)
    yolo = create_dataset(str(tmp_path / "images" / "val"), names, 96, augment=False, hyp=None)
    assert len(coco) == len(yolo) == len(gt["images"])
    for i in range(len(coco)):
        (ia, la, ma), (ib, lb, mb) = coco[i], yolo[i]
        assert torch.equal(ia, ib) and torch.allclose(la, lb, atol=1e-6)
        assert {k: ma[k] for k in ("image_id", "orig_shape", "ratio", "pad")} == \
            {k: mb[k] for k in ("image_id", "orig_shape", "ratio", "pad")}
    ga, gb = coco.coco_gt(), yolo.coco_gt()
    assert np.allclose([a["bbox"] for a in ga["annotations"]], [a["bbox"] for a in gb["annotations"]], atol=1e-4)
    assert coco.category_ids == yolo.category_ids == list(range(1, len(names) + 1))


def write_coco(root, categories, annotations, images=(("a.png", W, H),)):
    for name, _, _ in images:
        write_image(root / "images" / name)
    gt = {"images": [{"id": 10 + i, "file_name": n, "width": w, "height": h} for i, (n, w, h) in enumerate(images)],
          "annotations": [{"id": i + 1, "image_id": 10, "iscrowd": 0, **a} for i, a in enumerate(annotations)],
          "categories": [{"id": cid, "name": name} for cid, name in categories]}
    (root / "instances.json").write_text(json.dumps(gt))
    return {"images": str(root / "images"), "annotations": str(root / "instances.json")}


def test_coco_non_contiguous_category_ids(tmp_path):
    split = write_coco(tmp_path, [(1, "x"), (90, "b"), (3, "a")],
                       [{"category_id": 90, "bbox": [30, 20, 40, 40]}, {"category_id": 3, "bbox": [90, 40, 40, 40]},
                        {"category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1}])
    ds = create_dataset(split, ["a", "b", "x"], 128, augment=False, hyp=None)   # matched by name
    assert ds.category_ids == [3, 90, 1]
    _, labels, meta = ds[0]
    assert labels[:, 0].tolist() == [1, 0] and meta["image_id"] == 10   # the crowd box is no target...
    assert len(ds.coco_gt()["annotations"]) == 3                       # ...but stays in the ground truth
    ds = create_dataset(split, ["p", "q", "r"], 128, augment=False, hyp=None)   # no name match: by id order
    assert ds.category_ids == [1, 3, 90] and ds[0][1][:, 0].tolist() == [2, 1]


# ---- batching --------------------------------------------------------------------------------------------------

def test_collate_indexes_images_and_scales_to_float():
    imgs = [torch.full((3, 64, 64), 255, dtype=torch.uint8), torch.zeros((3, 64, 64), dtype=torch.uint8),
            torch.zeros((3, 64, 64), dtype=torch.uint8)]
    labels = [torch.tensor([[1, .5, .5, .2, .2], [0, .3, .3, .1, .1]]), torch.zeros((0, 5)),
              torch.tensor([[2, .6, .6, .2, .2]])]
    metas = [{"image_id": i} for i in range(3)]
    x, targets, out_metas = collate(list(zip(imgs, labels, metas)))
    assert x.dtype == torch.float32 and x.shape == (3, 3, 64, 64) and x[0].min() == 1 and x[1].max() == 0
    assert targets[:, 0].tolist() == [0, 0, 2] and targets[:, 1].tolist() == [1, 0, 2]
    assert torch.equal(targets[2, 2:], labels[2][0, 1:]) and out_metas == metas


def test_collate_pads_rectangular_images_and_rescales_labels():
    a, b = torch.zeros((3, 32, 64), dtype=torch.uint8), torch.zeros((3, 64, 32), dtype=torch.uint8)
    la, lb = torch.tensor([[0, .5, .5, .5, .5]]), torch.tensor([[1, .5, .5, .5, .5]])
    x, targets, _ = collate([(a, la, {}), (b, lb, {})])
    assert x.shape == (2, 3, 64, 64) and (x[0, :, 32:] == 114 / 255).all()
    # same pixels as before: centre (32, 16) of a 64x32 image, now in a 64x64 one
    assert targets[0, 2:].tolist() == [0.5, 0.25, 0.5, 0.25]
    assert targets[1, 2:].tolist() == [0.25, 0.5, 0.25, 0.5]


def test_dataloader_with_workers(shapes_cfg):
    loader, ds = create_dataloader(shapes_cfg["train"], list(shapes_mod.CLASSES), 96, 5, augment=True,
                                   hyp={**NO_AUG, "fliplr": 0.5, "degrees": 5}, workers=2, shuffle=True)
    ids, n_targets = [], 0
    for imgs, targets, metas in loader:
        assert imgs.shape[1:] == (3, 96, 96) and 0 <= imgs.min() and imgs.max() <= 1
        assert (targets[:, 0] < len(metas)).all()
        ids += [m["image_id"] for m in metas]
        n_targets += len(targets)
    assert sorted(ids) == sorted(s.image_id for s in ds.samples) and n_targets > 0


def test_distributed_sampler_splits_disjointly(shapes_cfg):
    names = list(shapes_mod.CLASSES)
    seen = []
    for rank in (0, 1):
        loader, ds = create_dataloader(shapes_cfg["train"], names, 64, 4, augment=False, hyp=None, shuffle=True,
                                       rank=rank, world_size=2, seed=3)
        assert isinstance(loader.sampler, DistributedSampler)
        loader.sampler.set_epoch(0)
        seen.append([m["image_id"] for _, _, metas in loader for m in metas])
        loader.sampler.set_epoch(1)
        assert [m["image_id"] for _, _, metas in loader for m in metas] != seen[-1]   # reshuffled per epoch
    assert len(seen[0]) == len(seen[1]) == len(ds) // 2
    assert set(seen[0]).isdisjoint(seen[1]) and set(seen[0]) | set(seen[1]) == {s.image_id for s in ds.samples}


# ---- bad input -------------------------------------------------------------------------------------------------

def truncated_jpeg(path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def make_bad(kind, root):
    """A YOLO-txt source holding one bad sample of `kind`; -> (source, text the error must contain)."""
    if kind == "missing_image":
        (root / "list.txt").write_text("images/ghost.png\n")
        return str(root / "list.txt"), "ghost.png"
    if kind == "corrupt_image":
        (root / "images").mkdir()
        (root / "images" / "junk.jpg").write_bytes(b"not an image at all")
        return str(root / "images"), "junk.jpg"
    lines = {"class_out_of_range": ["0 0.3 0.4 0.2 0.2", "7 0.5 0.5 0.1 0.1"],
             "box_outside": ["0 0.3 0.4 0.2 0.2", "0 0.95 0.5 0.3 0.2"],
             "malformed_line": ["0 0.3 0.4 0.2 0.2", "0 0.5 0.5"]}[kind]
    write_yolo_sample(root, "s", lines=lines)
    return str(root / "images"), "labels/s.txt: line 2"


@pytest.mark.parametrize("kind", ["missing_image", "corrupt_image", "class_out_of_range", "box_outside",
                                  "malformed_line"])
def test_bad_yolo_input_names_the_file(tmp_path, kind):
    source, where = make_bad(kind, tmp_path)
    with pytest.raises(DataError, match=where.replace(".", r"\.")):
        create_dataset(source, ["a", "b"], 64, augment=False, hyp=None)


def test_missing_image_is_also_a_file_not_found_error(tmp_path):
    source, _ = make_bad("missing_image", tmp_path)
    with pytest.raises(FileNotFoundError):
        create_dataset(source, ["a", "b"], 64, augment=False, hyp=None)
    assert issubclass(MissingDataError, DataError)


@pytest.mark.parametrize("ann, where", [
    ({"category_id": 5, "bbox": [30, 20, 40, 40]}, "annotation 1 (image a.png): category_id 5"),
    ({"category_id": 1, "bbox": [150, 20, 40, 40]}, "annotation 1 (image a.png): box"),
    ({"category_id": 1, "bbox": [30, 20]}, "annotation 1 (image a.png): bbox"),
])
def test_bad_coco_annotations_name_file_and_annotation(tmp_path, ann, where):
    split = write_coco(tmp_path, [(1, "a")], [ann])
    with pytest.raises(DataError, match=r"instances\.json: " + where.replace("(", r"\(").replace(")", r"\)")):
        create_dataset(split, ["a"], 64, augment=False, hyp=None)


def test_coco_missing_image_names_it(tmp_path):
    split = write_coco(tmp_path, [(1, "a")], [])
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(MissingDataError, match=r"images/a\.png"):
        create_dataset(split, ["a"], 64, augment=False, hyp=None)


def test_box_just_outside_is_clipped_not_an_error(tmp_path):
    write_yolo_sample(tmp_path, "s", lines=["0 0.5 0.5 1.01 0.4"])   # 0.8 px beyond each side of 160
    _, labels, _ = create_dataset(str(tmp_path / "images"), ["a"], 64, augment=False, hyp=None)[0]
    assert labels[0, 3].item() == pytest.approx(1.0)


def test_truncated_image_fails_at_load_naming_it(tmp_path):
    write_yolo_sample(tmp_path, "good")
    truncated_jpeg(tmp_path / "images" / "trunc.jpg")
    ds = create_dataset(str(tmp_path / "images"), ["a", "b"], 64, augment=False, hyp=None)
    bad = [i for i, s in enumerate(ds.samples) if s.path.endswith("trunc.jpg")]
    with pytest.raises(DataError, match=r"trunc\.jpg"):
        ds[bad[0]]


def test_skip_bad_drops_bad_samples_and_only_the_bad_lines_with_one_warning(tmp_path):
    good = [write_yolo_sample(tmp_path, name) for name in ("g1", "g2")]
    # One bad line beside a good one: only that line goes, the image and its good box stay.
    mixed = write_yolo_sample(tmp_path, "mixed", lines=["9 0.5 0.5 0.1 0.1", yolo_line(RECTS[0][0], 0)])
    write_yolo_sample(tmp_path, "out", lines=["0 -0.2 0.5 0.2 0.2"])
    (tmp_path / "images" / "junk.jpg").write_bytes(b"junk")
    truncated_jpeg(tmp_path / "images" / "trunc.jpg")
    listing = [str(p) for p in sorted((tmp_path / "images").iterdir())] + [str(tmp_path / "images" / "ghost.png")]
    (tmp_path / "list.txt").write_text("\n".join(listing))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = create_dataset(str(tmp_path / "list.txt"), ["a", "b"], 64, augment=False, hyp=None, skip_bad=True)
    kept = sorted(map(str, good + [mixed, tmp_path / "images" / "out.png"]))
    assert sorted(s.path for s in ds.samples) == kept
    by_path = {s.path: s for s in ds.samples}
    assert by_path[str(mixed)].classes.tolist() == [0] and len(by_path[str(tmp_path / "images" / "out.png")].boxes) == 0
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 3 bad sample(s) of 7" in message and "skipped 2 bad label line(s)" in message
    assert "mixed.txt: line 1" in message
    assert {img["file_name"] for img in ds.coco_gt()["images"]} == set(kept)


# ---- defects found by trying it as a new user (issue 13) -------------------------------------------------------

def test_zero_area_yolo_box_is_dropped_with_a_warning_naming_file_and_line(tmp_path):
    write_yolo_sample(tmp_path, "s", lines=[yolo_line(RECTS[0][0], 0), "1 0.5 0.5 0.0 0.2"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = create_dataset(str(tmp_path / "images"), ["a", "b"], 64, augment=False, hyp=None)
    assert ds.samples[0].classes.tolist() == [0]
    assert [a["category_id"] for a in ds.coco_gt()["annotations"]] == [1]   # class 0 -> category id 1
    assert len(caught) == 1 and "labels/s.txt: line 2" in str(caught[0].message)
    assert "zero area" in str(caught[0].message)


def test_zero_area_coco_box_is_neither_target_nor_ground_truth(tmp_path):
    split = write_coco(tmp_path, [(1, "a")], [{"category_id": 1, "bbox": [30, 20, 40, 40]},
                                              {"category_id": 1, "bbox": [90, 40, 0, 40]}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = create_dataset(split, ["a"], 64, augment=False, hyp=None)
    assert len(ds[0][1]) == 1
    assert [a["id"] for a in ds.coco_gt()["annotations"]] == [1]
    assert len(caught) == 1 and "instances.json: annotation 2 (image a.png)" in str(caught[0].message)


def test_zero_byte_image_is_called_empty(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jpg: empty image file \(0 bytes\)"):
        create_dataset(str(tmp_path / "images"), ["a"], 64, augment=False, hyp=None)


def test_fractional_class_id_is_not_called_out_of_range(tmp_path):
    write_yolo_sample(tmp_path, "s", lines=["1.5 0.5 0.5 0.1 0.1"])
    with pytest.raises(DataError, match=r"line 1: class id 1\.5 is not an integer"):
        create_dataset(str(tmp_path / "images"), ["a", "b", "c"], 64, augment=False, hyp=None)


def test_box_outside_error_quotes_the_values_as_written(tmp_path):
    write_yolo_sample(tmp_path, "s", lines=["0 0.95 0.5 0.3 0.2"])
    with pytest.raises(DataError) as e:
        create_dataset(str(tmp_path / "images"), ["a"], 64, augment=False, hyp=None)
    assert "'xc yc w h' = 0.95 0.5 0.3 0.2" in str(e.value) and "x 0.8..1.1" in str(e.value)


def test_decode_finds_a_truncated_image_up_front(tmp_path):
    write_yolo_sample(tmp_path, "good")
    truncated_jpeg(tmp_path / "images" / "trunc.jpg")
    with pytest.raises(DataError, match=r"trunc\.jpg"):
        create_dataset(str(tmp_path / "images"), ["a", "b"], 64, augment=False, hyp=None, decode=True)
