"""python -m yolo.detect: boxes come back in the original image's pixels (letterbox undone), one prediction
file per image (YOLO txt or JSON), drawn images, --classes, sources as folder, file or glob, errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from yolo.detect import detect, main

BG = (60, 60, 60)
# (name, width, height, [(x1, y1, x2, y2, class, colour)]): landscape, portrait, and smaller than img_size
IMAGES = [
    ("wide", 200, 120, [(30, 20, 90, 70, 0, (250, 40, 40)), (120, 60, 190, 110, 1, (40, 250, 40))]),
    ("tall", 90, 160, [(10, 100, 60, 150, 1, (40, 250, 40))]),
    ("small", 40, 30, [(5, 5, 25, 20, 0, (250, 40, 40))]),
]
COLOURS = {0: (250, 40, 40), 1: (40, 250, 40)}


class ColourDetector(torch.nn.Module):
    """Finds, in its letterboxed input, the extent of each class's colour and outputs it as an eval-mode
    Darknet would (xywh in input pixels, objectness 1, one-hot class): a detector with known answers."""

    def forward(self, x):
        img = x[0].permute(1, 2, 0) * 255
        rows = []
        for cls, colour in COLOURS.items():
            mask = (img - torch.tensor(colour, dtype=img.dtype)).abs().max(-1).values < 40
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs):
                # Split the mask into blobs by columns (our test boxes of one class never share columns).
                for lo, hi in column_runs(xs):
                    sel = (xs >= lo) & (xs <= hi)
                    x1, x2, y1, y2 = xs[sel].min(), xs[sel].max() + 1, ys[sel].min(), ys[sel].max() + 1
                    row = torch.zeros(5 + len(COLOURS))
                    row[:4] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dtype=torch.float)
                    row[4], row[5 + cls] = 1.0, 1.0
                    rows.append(row)
        return torch.stack(rows)[None] if rows else torch.zeros(1, 1, 5 + len(COLOURS))


def column_runs(xs):
    cols = sorted(set(xs.tolist()))
    runs, start = [], cols[0]
    for a, b in zip(cols, cols[1:]):
        if b != a + 1:
            runs.append((start, a))
            start = b
    return runs + [(start, cols[-1])]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect-src")
    for name, w, h, boxes in IMAGES:
        pixels = np.full((h, w, 3), BG, np.uint8)
        for x1, y1, x2, y2, _, colour in boxes:
            pixels[y1:y2, x1:x2] = colour
        Image.fromarray(pixels).save(root / f"{name}.png")
    return root


def test_boxes_come_back_in_original_pixels(images, tmp_path):
    out = detect(ColourDetector(), str(images), tmp_path, img_size=96, names=["red", "green"], conf_thres=0.5)
    assert sorted(out) == sorted(str(images / f"{n}.png") for n, *_ in IMAGES)
    for name, w, h, boxes in IMAGES:
        det = out[str(images / f"{name}.png")]
        expected = sorted((c, x1, y1, x2, y2) for x1, y1, x2, y2, c, _ in boxes)
        got = sorted((int(c), *b) for *b, _, c in det.tolist())
        assert [g[0] for g in got] == [e[0] for e in expected]
        # the resize blurs edges over about 2 input pixels, which the colour threshold may lose: 2 input
        # pixels in original pixels (a pad or ratio not undone is off by 10s of pixels)
        tol = 2 * max(w, h) / 96
        assert np.abs(np.array([g[1:] for g in got]) - np.array([e[1:] for e in expected])).max() <= tol, name
        lines = (tmp_path / "labels" / f"{name}.txt").read_text().splitlines()
        assert len(lines) == len(boxes)
        for line, (c, x1, y1, x2, y2) in zip(sorted(lines), expected):
            cls, xc, yc, bw, bh, conf = (float(v) for v in line.split())
            assert cls == c and conf == 1.0
            assert np.allclose([xc * w, yc * h, bw * w, bh * h],
                               [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], atol=tol)
        with Image.open(tmp_path / f"{name}.jpg") as drawn:
            assert drawn.size == (w, h)


def test_json_format_and_class_filter(images, tmp_path):
    out = detect(ColourDetector(), str(images / "wide.png"), tmp_path, img_size=64, names=["red", "green"],
                 classes=[1], save_format="json")
    items = json.loads((tmp_path / "labels" / "wide.json").read_text())
    assert [i["name"] for i in items] == ["green"] and len(out[str(images / "wide.png")]) == 1
    assert np.abs(np.array(items[0]["box"]) - [120, 60, 190, 110]).max() <= 2 * 200 / 64


def test_cli_glob_source_with_a_checkpoint_writes_one_file_per_image(trained, images, tmp_path, capsys):
    argv = ["--weights", trained["best"], "--source", str(images / "*.png"), "--project", str(tmp_path),
            "--device", "cpu", "--conf-thres", "0.0"]
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "exp" / "labels").iterdir()) == ["small.txt", "tall.txt", "wide.txt"]
    assert main(argv) == 0  # a second run gets its own folder
    assert (tmp_path / "exp2" / "labels" / "wide.txt").is_file()
    lines = (tmp_path / "exp" / "labels" / "wide.txt").read_text().splitlines()
    assert lines and all(len(line.split()) == 6 for line in lines)  # conf 0: an untrained model finds plenty


def test_same_names_in_sub_folders_do_not_overwrite_and_shapes_source(trained, images, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "src" / sub).mkdir(parents=True)
        (tmp_path / "src" / sub / "x.png").write_bytes((images / "wide.png").read_bytes())
    detect(ColourDetector(), str(tmp_path / "src"), tmp_path / "out", img_size=64)
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*")) == \
        ["a/x.jpg", "b/x.jpg", "labels/a/x.txt", "labels/b/x.txt"]
    assert main(["--weights", trained["best"], "--source", "shapes:n_train=8,n_val=4,img_size=64", "--cache-dir",
                 trained["cache_dir"], "--project", str(tmp_path), "--device", "cpu", "--no-verbose"]) == 0
    assert len(list((tmp_path / "exp" / "labels").iterdir())) == 4  # the 4 generated val images


@pytest.mark.parametrize("extra, named", [
    (["--source", "no/such/folder"], "no/such/folder"),
    (["--classes", "9"], "--classes [9]"),
    (["--img-size", "100"], "--img-size 100"),
])
def test_cli_errors_exit_2_on_one_line(trained, images, tmp_path, extra, named, capsys):
    argv = ["--weights", trained["best"], "--source", str(images), "--project", str(tmp_path), "--device", "cpu"]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and named in err
    assert not (tmp_path / "exp").exists()  # nothing written for a bad command


# ---- issue 19: nothing lost, boxes in the frame the user sees ---------------------------------------------------

def read_label_lines(path):
    return [line.split() for line in path.read_text().splitlines()]


def test_same_name_with_another_extension_keeps_both_results(trained, images, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes((images / "wide.png").read_bytes())  # 2 objects, 200 x 120
    with Image.open(images / "tall.png") as im:
        im.save(src / "a.jpg", quality=95)  # 1 object, 90 x 160
    out = detect(ColourDetector(), str(src), tmp_path / "out", img_size=96, names=["red", "green"], conf_thres=0.5)
    assert [len(out[str(src / n)]) for n in ("a.png", "a.jpg")] == [2, 1]
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*"))
    assert written == ["a.jpg.jpg", "a.png.jpg", "labels/a.jpg.txt", "labels/a.png.txt"]
    assert len(read_label_lines(tmp_path / "out/labels/a.png.txt")) == 2
    assert len(read_label_lines(tmp_path / "out/labels/a.jpg.txt")) == 1
    for name, size in (("a.png.jpg", (200, 120)), ("a.jpg.jpg", (90, 160))):
        with Image.open(tmp_path / "out" / name) as drawn:
            assert drawn.size == size
    # the CLI: one output per image, exit 0
    assert main(["--weights", trained["best"], "--source", str(src), "--project", str(tmp_path / "cli"),
                 "--device", "cpu", "--no-verbose"]) == 0
    assert sorted(p.name for p in (tmp_path / "cli/exp/labels").iterdir()) == ["a.jpg.txt", "a.png.txt"]


def test_exif_rotated_photo_gets_boxes_in_the_displayed_frame(images, tmp_path):
    name, w, h, boxes = IMAGES[1]  # "tall": portrait as displayed
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown turned 90 degrees clockwise
    with Image.open(images / f"{name}.png") as im:
        im.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.png", exif=exif.tobytes())
    out = detect(ColourDetector(), str(tmp_path / "phone.png"), tmp_path / "out", img_size=96,
                 names=["red", "green"], conf_thres=0.5)
    det = out[str(tmp_path / "phone.png")]
    expected = sorted((c, x1, y1, x2, y2) for x1, y1, x2, y2, c, _ in boxes)
    got = sorted((int(c), *b) for *b, _, c in det.tolist())
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert np.abs(np.array([g[1:] for g in got]) - np.array([e[1:] for e in expected])).max() <= 2 * max(w, h) / 96
    with Image.open(tmp_path / "out/phone.jpg") as drawn:
        assert drawn.size == (w, h)


def test_unreadable_sub_folder_of_the_source_is_an_error(images, tmp_path, monkeypatch, capsys):
    from fs_faults import Denied

    from yolo.data import DataError
    from yolo.detect import find_images

    (tmp_path / "src" / "more").mkdir(parents=True)
    for target in (tmp_path / "src" / "x.png", tmp_path / "src" / "more" / "y.png"):
        target.write_bytes((images / "wide.png").read_bytes())
    faults = Denied(monkeypatch)
    try:
        faults.unreadable_path(tmp_path / "src" / "more")
        with pytest.raises(DataError) as e:
            find_images(str(tmp_path / "src"))
        assert str(tmp_path / "src" / "more") in str(e.value) and "ermission denied" in str(e.value)
        assert main(["--weights", "unused.pt", "--source", str(tmp_path / "src"), "--project", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(tmp_path / "src" / "more") in err
    finally:
        faults.restore()
