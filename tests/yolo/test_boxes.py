"""Box conversions, IoU/GIoU, NMS (against a brute-force pure-Python reference) and scale_coords."""
import pytest
import torch

from yolo.boxes import bbox_iou, box_iou, nms, non_max_suppression, scale_coords, xywh2xyxy, xyxy2xywh


def test_xywh_xyxy_hand_values_and_round_trip():
    xywh = torch.tensor([[10.0, 20.0, 4.0, 6.0]])
    torch.testing.assert_close(xywh2xyxy(xywh), torch.tensor([[8.0, 17.0, 12.0, 23.0]]))
    boxes = torch.rand(50, 4, generator=torch.Generator().manual_seed(0)) * 100
    torch.testing.assert_close(xyxy2xywh(xywh2xyxy(boxes)), boxes)
    assert torch.equal(xywh, torch.tensor([[10.0, 20.0, 4.0, 6.0]]))  # inputs untouched


def random_xyxy(n, seed, size=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat((xy, xy + wh), 1)


def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 1.0, 2.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0, 0.5]]))


def test_box_iou_symmetric_identity_and_bounded():
    a, b = random_xyxy(20, 1), random_xyxy(30, 2)
    iou = box_iou(a, b)
    assert iou.shape == (20, 30)
    torch.testing.assert_close(iou, box_iou(b, a).T)
    torch.testing.assert_close(torch.diagonal(box_iou(a, a)), torch.ones(20))
    assert (iou >= 0).all() and (iou <= 1).all()


def test_bbox_iou_is_the_diagonal_of_box_iou():
    a, b = random_xyxy(40, 3), random_xyxy(40, 4)
    torch.testing.assert_close(bbox_iou(a, b), torch.diagonal(box_iou(a, b)), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(bbox_iou(xyxy2xywh(a), xyxy2xywh(b), x1y1x2y2=False), bbox_iou(a, b))


def test_giou_hand_values():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0], [1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]])
    # disjoint: IoU 0, enclosing 3x1, union 2 -> -1/3; overlapping: 1/7 - (9 - 7)/9; identical: 1
    expected = torch.tensor([-1 / 3, 1 / 7 - 2 / 9, 1.0])
    torch.testing.assert_close(bbox_iou(a, b, giou=True), expected)


def test_giou_bounds_symmetry_and_below_iou():
    a, b = random_xyxy(100, 5), random_xyxy(100, 6)
    giou, iou = bbox_iou(a, b, giou=True), bbox_iou(a, b)
    torch.testing.assert_close(giou, bbox_iou(b, a, giou=True))
    assert (giou >= -1).all() and (giou <= iou + 1e-6).all()
    assert (giou < 0).any()  # the random pairs include disjoint boxes, where GIoU still ranks them


# ---- NMS --------------------------------------------------------------------------------------------------------

def py_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def brute_force_detections(pred, conf_thres, iou_thres, max_det):
    """Pure-Python reference for one image: every (box, class) above conf_thres, greedy NMS per class."""
    candidates = []
    for row in pred.tolist():
        x, y, w, h, obj = row[:5]
        for c, p in enumerate(row[5:]):
            if obj * p > conf_thres:
                candidates.append(((x - w / 2, y - h / 2, x + w / 2, y + h / 2), obj * p, c))
    candidates.sort(key=lambda d: -d[1])
    kept = []
    for box, conf, c in candidates:
        if all(kc != c or py_iou(box, kb) <= iou_thres for kb, _, kc in kept):
            kept.append((box, conf, c))
    return [list(box) + [conf, float(c)] for box, conf, c in kept[:max_det]]


def random_predictions(seed, batch=2, n=150, nc=4, size=128.0):
    """Model-like output: clustered boxes (so NMS has work to do), objectness and class probabilities."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, 2, generator=g) * size
    xy = centres[torch.randint(0, 6, (batch, n), generator=g)] + torch.randn(batch, n, 2, generator=g) * 4
    wh = 10 + torch.rand(batch, n, 2, generator=g) * 30
    probs = torch.rand(batch, n, 1 + nc, generator=g)
    return torch.cat((xy, wh, probs), 2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("conf_thres, iou_thres, max_det", [(0.001, 0.6, 300), (0.3, 0.45, 300), (0.1, 0.5, 7)])
def test_nms_matches_brute_force(seed, conf_thres, iou_thres, max_det):
    pred = random_predictions(seed)
    out = non_max_suppression(pred, conf_thres, iou_thres, max_det)
    assert len(out) == pred.shape[0]
    for image_pred, det in zip(pred, out):
        expected = torch.tensor(brute_force_detections(image_pred, conf_thres, iou_thres, max_det))
        assert det.shape == expected.shape and det.shape[1] == 6
        torch.testing.assert_close(det, expected.to(det.dtype), atol=1e-4, rtol=1e-5)
        assert (det[:, 4] > conf_thres).all()
        assert (det[1:, 4] <= det[:-1, 4]).all()  # sorted by confidence


@pytest.mark.parametrize("block", [1, 3, 16, 512])
def test_nms_blocks_give_the_greedy_result(block):
    g = torch.Generator().manual_seed(7)
    boxes = random_xyxy(80, 8, size=60.0)
    scores = torch.rand(80, generator=g)
    classes = torch.randint(0, 2, (80,), generator=g).float()
    keep = nms(boxes, scores, classes, 0.4, block=block)
    rows = [(b, s, c) for b, s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist())]
    order = sorted(range(80), key=lambda i: -rows[i][1])
    expected = []
    for i in order:
        if all(rows[k][2] != rows[i][2] or py_iou(rows[k][0], rows[i][0]) <= 0.4 for k in expected):
            expected.append(i)
    assert keep.tolist() == expected


def test_nms_chain_keeps_the_box_whose_suppressor_was_suppressed():
    # A suppresses B, B would suppress C, but B is gone so C survives (a one-pass "fast NMS" drops C).
    boxes = torch.tensor([[0.0, 0, 10, 10], [3.0, 0, 13, 10], [7.0, 0, 17, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, torch.zeros(3), 0.4).tolist() == [0, 2]


def one_box(x, y, w, h, obj, class_probs):
    return torch.tensor([x, y, w, h, obj] + class_probs)


def test_nms_is_class_aware():
    # Two identical boxes: one says class 0, the other class 1 -> both kept; same class -> one kept.
    pred = torch.stack((one_box(50, 50, 20, 20, 0.9, [0.9, 0.0]), one_box(50, 50, 20, 20, 0.8, [0.0, 0.9])))
    det = non_max_suppression(pred[None], conf_thres=0.1)[0]
    assert det[:, 5].tolist() == [0.0, 1.0]
    same = torch.stack((one_box(50, 50, 20, 20, 0.9, [0.9, 0.0]), one_box(51, 50, 20, 20, 0.8, [0.9, 0.0])))
    det = non_max_suppression(same[None], conf_thres=0.1)[0]
    assert len(det) == 1 and det[0, 4].item() == pytest.approx(0.81)


def test_nms_multi_label_conf_threshold_and_class_filter():
    pred = one_box(50, 50, 20, 10, 0.5, [0.8, 0.6, 0.1])[None, None]
    det = non_max_suppression(pred, conf_thres=0.2)[0]
    torch.testing.assert_close(det, torch.tensor([[40.0, 45, 60, 55, 0.4, 0], [40.0, 45, 60, 55, 0.3, 1]]))
    assert non_max_suppression(pred, conf_thres=0.35)[0][:, 5].tolist() == [0.0]
    assert non_max_suppression(pred, conf_thres=0.2, classes=[1])[0][:, 5].tolist() == [1.0]


def test_nms_max_det_keeps_the_best():
    pred = random_predictions(11, batch=1, n=400)
    full = non_max_suppression(pred, 0.001, 0.6, max_det=10_000)[0]
    top = non_max_suppression(pred, 0.001, 0.6, max_det=25)[0]
    assert len(full) > 25
    torch.testing.assert_close(top, full[:25])


def test_nms_empty_inputs():
    out = non_max_suppression(torch.zeros(2, 0, 7))
    assert [tuple(d.shape) for d in out] == [(0, 6), (0, 6)]
    low = random_predictions(0)
    low[..., 4] = 0.0005  # every objectness under the threshold
    assert all(len(d) == 0 for d in non_max_suppression(low, conf_thres=0.001))


# ---- scale_coords -----------------------------------------------------------------------------------------------

def test_scale_coords_inverts_a_letterbox():
    h0, w0, size = 200, 100, 128
    gain = min(size / h0, size / w0)  # 0.64: the image becomes 128 x 64 inside a 128 x 128 letterbox
    pad_w, pad_h = (size - w0 * gain) / 2, (size - h0 * gain) / 2  # 32, 0
    original = torch.tensor([[10.0, 20.0, 60.0, 190.0], [0.0, 0.0, 100.0, 200.0]])
    boxed = original.clone()
    boxed[:, [0, 2]] = boxed[:, [0, 2]] * gain + pad_w
    boxed[:, [1, 3]] = boxed[:, [1, 3]] * gain + pad_h
    before = boxed.clone()
    torch.testing.assert_close(scale_coords((size, size), boxed, (h0, w0)), original)
    torch.testing.assert_close(scale_coords((size, size), boxed, (h0, w0), ratio_pad=((gain, gain), (pad_w, pad_h))),
                               original)
    assert torch.equal(boxed, before)  # the input is not modified


def test_scale_coords_clips_to_the_original_image():
    boxes = torch.tensor([[-20.0, -5.0, 140.0, 70.0]])  # beyond the 128 x 64 letterboxed input
    out = scale_coords((64, 128), boxes, (32, 64))  # gain 2, no padding
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 64.0, 32.0]]))
