"""Images as they are displayed (issue 19): EXIF orientation applied before labels meet pixels, 16-bit grey
scaled to 0..255 instead of clipped, images without an 8-bit meaning refused naming the file."""
import numpy as np
import pytest
import torch
from PIL import Image

from yolo.data import DataError, create_dataset
from yolo.data.checks import check_image, load_image

# EXIF orientation -> how the stored pixels are made from the displayed ones (the inverse of what a viewer
# does to show them; EXIF 2.3, tag 0x0112).
STORE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
         5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_270}
W, H = 60, 96  # displayed: portrait, as a phone shows it
RED = (250, 30, 30)
BOX = (8, 50, 30, 88)  # x1, y1, x2, y2 in the displayed frame: bottom left, where a rotation cannot map it


def displayed_pixels():
    img = np.full((H, W, 3), 70, np.uint8)
    x1, y1, x2, y2 = BOX
    img[y1:y2, x1:x2] = RED
    return img


def save_rotated(path, orientation):
    """Store the displayed image as a camera would: pixels turned, the orientation in EXIF."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(displayed_pixels()).transpose(STORE[orientation]).save(path, exif=exif.tobytes(), quality=95)
    return path


@pytest.mark.parametrize("orientation", [3, 5, 6, 8])
def test_exif_oriented_photo_trains_on_the_pixels_under_its_labels(tmp_path, orientation):
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    path = save_rotated(tmp_path / "images" / "phone.jpg", orientation)
    x1, y1, x2, y2 = BOX
    (tmp_path / "labels" / "phone.txt").write_text(f"0 {(x1 + x2) / 2 / W} {(y1 + y2) / 2 / H} {(x2 - x1) / W} "
                                                   f"{(y2 - y1) / H}\n")
    assert check_image(path) == check_image(path, decode=True) == (H, W)
    assert np.abs(load_image(path).astype(int) - displayed_pixels()).mean() < 4  # JPEG edges; a turn: > 20
    ds = create_dataset(str(tmp_path / "images"), ["red"], 96, augment=False, hyp=None)
    img, labels, meta = ds[0]
    assert meta["orig_shape"] == (H, W)
    red = (img.permute(1, 2, 0).int() - torch.tensor(RED)).abs().max(-1).values < 60
    ys, xs = torch.nonzero(red, as_tuple=True)
    _, xc, yc, bw, bh = labels[0].tolist()
    size = img.shape[-1]
    found = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    labelled = [(xc - bw / 2) * size, (yc - bh / 2) * size, (xc + bw / 2) * size, (yc + bh / 2) * size]
    assert np.abs(np.array(found) - labelled).max() <= 1.5  # the resize blurs edges by about a pixel


def test_sixteen_bit_grey_is_scaled_not_saturated(tmp_path):
    ramp = np.linspace(0, 65535, 64).astype(np.uint16).reshape(1, -1).repeat(8, 0)
    Image.fromarray(ramp).save(tmp_path / "depth.png")
    with Image.open(tmp_path / "depth.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit image as Pillow reads it
    rgb = load_image(tmp_path / "depth.png")
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 64, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], expected)


def test_thirty_two_bit_integers_inside_sixteen_bits_are_scaled_alike(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.int32)
    Image.fromarray(values).save(tmp_path / "ints.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "ints.tif")[..., 0], [[0, 1, 128, 255]])


@pytest.mark.parametrize("name, pixels, reason", [
    ("wide.tif", np.array([[0, 70000]], np.int32), "outside the 16-bit range"),
    ("float.tif", np.array([[0.0, 0.5]], np.float32), "floating-point image"),
])
def test_images_without_an_8_bit_meaning_are_refused_naming_the_file(tmp_path, name, pixels, reason):
    Image.fromarray(pixels).save(tmp_path / name)
    with pytest.raises(DataError) as e:
        load_image(tmp_path / name)
    assert name in str(e.value) and reason in str(e.value) and "\n" not in str(e.value)
    if name == "float.tif":  # known from the header: refused before any training
        with pytest.raises(DataError, match="floating-point"):
            check_image(tmp_path / name)
