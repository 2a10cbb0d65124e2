"""The YOLOv3 loss: target assignment, values, gradients, overfitting one batch; and the hyperparameters."""
import math

import pytest
import torch

from yolo.boxes import bbox_iou
from yolo.hyp import DEFAULT_HYP, load_hyp
from yolo.loss import NOMINAL_BATCH_SIZE, build_targets, compute_loss, giou_loss, wh_iou
from yolo.models import Darknet

TARGETS = torch.tensor([  # image, class, x, y, w, h (normalized)
    [0, 0, 0.30, 0.40, 0.20, 0.30],
    [0, 1, 0.70, 0.60, 0.40, 0.50],
    [1, 2, 0.50, 0.50, 0.60, 0.70],
    [1, 1, 0.20, 0.80, 0.15, 0.20],
])


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Darknet("yolov3-tiny", num_classes=3)


def fake_outputs(model, batch, h, w, seed=0, scale=1.0):
    """Random raw head outputs of the right shapes (no forward pass needed)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, y.na, h // y.stride, w // y.stride, 5 + y.nc, generator=g) * scale
            for y in model.yolo_layers]


def test_wh_iou_hand_values():
    iou = wh_iou(torch.tensor([[2.0, 2.0], [4.0, 1.0]]), torch.tensor([[2.0, 2.0], [1.0, 1.0]]))
    torch.testing.assert_close(iou, torch.tensor([[1.0, 0.25], [2 / 6, 0.25]]))


def test_build_targets_assigns_matching_anchors_and_cells():
    model = Darknet("yolov3-tiny")  # head 0: stride 32, anchors (81,82) (135,169) (344,319); head 1: stride 16,
    outputs = fake_outputs(model, 1, 256, 256)  # anchors (10,14) (23,27) (37,58)
    target = torch.tensor([[0, 5, 0.5, 0.3, 81 / 256, 82 / 256]])
    (b0, a0, gj0, gi0, tbox0, c0), (b1, a1, gj1, gi1, tbox1, c1) = build_targets(outputs, target, model, 0.2)
    # wh IoU with (81,82) = 1, with (135,169) = 0.29, (344,319) = 0.06; (37,58) = 0.32, (23,27) = 0.09
    assert a0.tolist() == [0, 1] and a1.tolist() == [2]
    assert b0.tolist() == [0, 0] and c0.tolist() == [5, 5] and c1.tolist() == [5]
    assert gi0.tolist() == [4, 4] and gj0.tolist() == [2, 2]  # x 0.5 * 8 cells, y 0.3 * 8 = 2.4
    assert gi1.tolist() == [8] and gj1.tolist() == [4]  # 16 cells: 8.0, 4.8
    torch.testing.assert_close(tbox0[0], torch.tensor([0.0, 0.4, 81 / 32, 82 / 32]))
    torch.testing.assert_close(tbox1[0], torch.tensor([0.0, 0.8, 81 / 16, 82 / 16]))


def test_build_targets_keeps_edge_centres_inside_the_grid(tiny):
    outputs = fake_outputs(tiny, 1, 64, 64)
    edge = torch.tensor([[0, 0, 1.0, 1.0, 0.5, 0.5]])
    for p, (b, a, gj, gi, tbox, c) in zip(outputs, build_targets(outputs, edge, tiny, 0.0)):
        assert len(b) == 3  # iou_t 0: every anchor matches
        assert gi.tolist() == [p.shape[3] - 1] * 3 and gj.tolist() == [p.shape[2] - 1] * 3
    assert torch.isfinite(compute_loss(outputs, edge, tiny)[0])


def test_loss_is_positive_finite_and_scaled_by_batch(tiny):
    outputs = fake_outputs(tiny, 2, 64, 96)
    loss, items = compute_loss(outputs, TARGETS, tiny)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert items.shape == (4,) and not items.requires_grad and (items[:3] > 0).all()
    torch.testing.assert_close(items[3], items[:3].sum())
    torch.testing.assert_close(loss.detach(), items[3] * 2 / NOMINAL_BATCH_SIZE)
    # Doubling the batch with the same images: same per-image loss items, twice the loss (and gradient).
    doubled = [torch.cat((p, p)) for p in outputs]
    targets2 = torch.cat((TARGETS, TARGETS + torch.tensor([2, 0, 0, 0, 0, 0])))
    loss2, items2 = compute_loss(doubled, targets2, tiny)
    torch.testing.assert_close(items2, items)
    torch.testing.assert_close(loss2, 2 * loss)


def test_loss_weights_come_from_hyp(tiny):
    outputs = fake_outputs(tiny, 2, 64, 96)
    _, base = compute_loss(outputs, TARGETS, tiny)
    _, doubled = compute_loss(outputs, TARGETS, tiny, {"giou": 2 * DEFAULT_HYP["giou"], "cls": 0.0})
    torch.testing.assert_close(doubled[0], 2 * base[0])
    torch.testing.assert_close(doubled[1], base[1])
    assert doubled[2] == 0


def test_perfect_predictions_give_zero_box_and_objectness_loss(tiny):
    """Logits that decode exactly to every assigned target (GIoU 1, so objectness target 1 there) and are
    confidently empty everywhere else: box and objectness losses vanish."""
    outputs = fake_outputs(tiny, 2, 64, 96, scale=0.1)
    for head, p, (b, a, gj, gi, tbox, _) in zip(tiny.yolo_layers, outputs,
                                                build_targets(outputs, TARGETS, tiny, DEFAULT_HYP["iou_t"])):
        offset = tbox[:, :2].clamp(1e-4, 1 - 1e-4)
        p[b, a, gj, gi, :2] = torch.log(offset / (1 - offset))  # sigmoid^-1
        p[b, a, gj, gi, 2:4] = torch.log(tbox[:, 2:4] / (head.anchors[a] / head.stride))
        p[..., 4] = -20.0
        p[b, a, gj, gi, 4] = 20.0
    _, items = compute_loss(outputs, TARGETS, tiny)
    assert items[0].abs() < 1e-3 and items[1] < 0.05  # finite logits: a little is left
    _, random_items = compute_loss(fake_outputs(tiny, 2, 64, 96, scale=0.1), TARGETS, tiny)
    assert random_items[0] > 0.5


def test_no_targets_gives_finite_objectness_only(tiny):
    outputs = [p.requires_grad_() for p in fake_outputs(tiny, 2, 64, 96)]
    loss, items = compute_loss(outputs, torch.zeros(0, 6), tiny)
    assert torch.isfinite(loss) and items[0] == 0 and items[2] == 0 and items[1] > 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad[..., 4].abs().sum() > 0 for p in outputs)


def test_gradient_reaches_every_conv(tiny):
    tiny.zero_grad()
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    loss, _ = compute_loss(tiny(x), TARGETS, tiny)
    loss.backward()
    convs = [m for m in tiny.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13
    for conv in convs:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
        assert torch.isfinite(conv.weight.grad).all()
    tiny.zero_grad()


def test_half_precision_outputs_give_an_fp32_loss(tiny):
    outputs = fake_outputs(tiny, 2, 64, 96)
    loss32, items32 = compute_loss(outputs, TARGETS, tiny)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16, items16 = compute_loss([p.bfloat16() for p in outputs], TARGETS, tiny)
    assert loss16.dtype == torch.float32
    torch.testing.assert_close(items16, items32, rtol=0.02, atol=0.02)


def test_bad_targets_are_rejected_with_the_reason(tiny):
    outputs = fake_outputs(tiny, 2, 64, 96)
    with pytest.raises(ValueError, match="class ids"):
        compute_loss(outputs, torch.tensor([[0, 3, 0.5, 0.5, 0.1, 0.1]]), tiny)
    with pytest.raises(ValueError, match="image indices"):
        compute_loss(outputs, torch.tensor([[2, 0, 0.5, 0.5, 0.1, 0.1]]), tiny)
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        compute_loss(outputs, torch.zeros(3, 5), tiny)


@pytest.mark.slow
def test_loss_falls_when_overfitting_one_batch():
    torch.manual_seed(0)
    model = Darknet("yolov3-tiny", num_classes=3)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    first = None
    for _ in range(30):
        loss, items = compute_loss(model(x), TARGETS, model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = items if first is None else first
    ratio = items / first  # box, obj, cls, total: every term learns, not only the easy class term
    assert ratio[3] < 0.5 and ratio[0] < 0.6 and ratio[1] < 0.75 and ratio[2] < 0.1, ratio


# ---- hyperparameters -------------------------------------------------------------------------------------------

def test_default_hyp_is_the_2020_ultralytics_set():
    assert DEFAULT_HYP == {
        "giou": 3.54, "cls": 37.4, "cls_pw": 1.0, "obj": 64.3, "obj_pw": 1.0, "iou_t": 0.20, "lr0": 0.01,
        "lrf": 0.0005, "momentum": 0.937, "weight_decay": 0.0005, "fl_gamma": 0.0, "hsv_h": 0.0138,
        "hsv_s": 0.678, "hsv_v": 0.36, "degrees": 1.98, "translate": 0.05, "scale": 0.05, "shear": 0.641,
        "fliplr": 0.5, "warmup_epochs": 3.0, "giou_pow": 1.0,
    }


def test_load_hyp_merges_a_yaml_over_the_defaults(tmp_path):
    assert load_hyp(None) == DEFAULT_HYP and load_hyp(None) is not DEFAULT_HYP
    path = tmp_path / "hyp.yaml"
    path.write_text("lr0: 0.002\nfliplr: 0\n")
    hyp = load_hyp(path)
    assert hyp["lr0"] == 0.002 and hyp["fliplr"] == 0.0 and hyp["giou"] == 3.54
    assert DEFAULT_HYP["lr0"] == 0.01  # the defaults are not modified


def test_load_hyp_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "hyp.yaml"
    path.write_text("lr0: 0.002\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"hyp.yaml.*learning_rate"):
        load_hyp(path)
    path.write_text("lr0: fast\n")
    with pytest.raises(ValueError, match=r"hyp.yaml.*lr0"):
        load_hyp(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_hyp(tmp_path / "missing.yaml")


def test_focal_loss_option_changes_only_the_bce_terms(tiny):
    outputs = fake_outputs(tiny, 2, 64, 96)
    _, plain = compute_loss(outputs, TARGETS, tiny)
    _, focal = compute_loss(outputs, TARGETS, tiny, {"fl_gamma": 1.5})
    torch.testing.assert_close(focal[0], plain[0])
    assert focal[1] < plain[1] and focal[2] < plain[2] and math.isfinite(focal[3])


# ---- issue 20: the seed thread's squared GIoU loss and scale_xy in the loss ------------------------------------

def hand_giou(a, b):
    """GIoU of two (xc, yc, w, h) boxes in plain Python: IoU - (enclosing area - union) / enclosing area."""
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    return inter / union - (hull - union) / hull


def test_squared_giou_of_a_known_pair_of_boxes():
    # (0,0)-(2,2) and (1,1)-(3,3): intersection 1, union 7, hull 9 -> GIoU = 1/7 - 2/9 = -5/63.
    a, b = torch.tensor([[1.0, 1.0, 2.0, 2.0]]), torch.tensor([[2.0, 2.0, 2.0, 2.0]])
    giou = bbox_iou(a, b, x1y1x2y2=False, giou=True)
    torch.testing.assert_close(giou, torch.tensor([-5 / 63]))
    assert hand_giou([1, 1, 2, 2], [2, 2, 2, 2]) == pytest.approx(-5 / 63)
    torch.testing.assert_close(giou_loss(giou), torch.tensor(68 / 63))
    torch.testing.assert_close(giou_loss(giou, 2), torch.tensor((68 / 63) ** 2))
    # With a perfect box beside it: the mean of 0 and (68/63)^2.
    torch.testing.assert_close(giou_loss(torch.tensor([-5 / 63, 1.0]), 2), torch.tensor((68 / 63) ** 2 / 2))


def box_term_by_hand(model, outputs, targets, power):
    """hyp giou x the sum over heads of mean((1 - GIoU) ** power), every GIoU computed in plain Python from the
    decoded prediction and the assigned target."""
    total = 0.0
    for head, p, (b, a, gj, gi, tbox, _) in zip(model.yolo_layers, outputs,
                                                build_targets(outputs, targets, model, DEFAULT_HYP["iou_t"])):
        terms = []
        for k in range(len(b)):
            t = p[b[k], a[k], gj[k], gi[k]].double().tolist()
            anchor = (head.anchors[a[k]] / head.stride).double().tolist()
            sig = [1 / (1 + math.exp(-v)) for v in t[:2]]
            s = head.scale_xy
            pred = [s * sig[0] - (s - 1) / 2, s * sig[1] - (s - 1) / 2, math.exp(t[2]) * anchor[0],
                    math.exp(t[3]) * anchor[1]]
            terms.append((1 - hand_giou(pred, tbox[k].double().tolist())) ** power)
        total += sum(terms) / len(terms) if terms else 0.0  # the loss skips a head with no assignment
    return DEFAULT_HYP["giou"] * total


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_giou_pow_sets_the_box_loss_power(tiny, power):
    outputs = fake_outputs(tiny, 2, 64, 96)
    _, items = compute_loss(outputs, TARGETS, tiny, {"giou_pow": power})
    assert items[0].item() == pytest.approx(box_term_by_hand(tiny, outputs, TARGETS, power), rel=1e-5)
    _, plain = compute_loss(outputs, TARGETS, tiny)
    torch.testing.assert_close(items[2], plain[2])  # the class term does not depend on it
    if power == 2.0:
        assert items[0] != plain[0]


def test_giou_pow_below_1_is_rejected(tmp_path):
    path = tmp_path / "hyp.yaml"
    path.write_text("giou_pow: 0.5\n")
    with pytest.raises(ValueError, match=r"hyp.yaml.*giou_pow"):
        load_hyp(path)


def test_scale_xy_reaches_a_centre_on_the_cell_edge():
    """A target centred on a cell corner (offset 0 in its cell): with scale_xy 1.2 the logit
    logit(0.1 / 1.2) decodes exactly onto it (box loss 0); with scale_xy 1 no finite logit does."""
    torch.manual_seed(0)
    stretched = Darknet("yolov3-tiny", num_classes=3, scale_xy=1.2)
    plain = Darknet("yolov3-tiny", num_classes=3)
    target = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4]])  # 0.5 of an even grid: a cell corner in both heads
    outputs = fake_outputs(stretched, 1, 64, 64, scale=0.1)
    edge_logit = math.log((0.1 / 1.2) / (1 - 0.1 / 1.2))
    assigned = 0
    for head, p, (b, a, gj, gi, tbox, _) in zip(stretched.yolo_layers, outputs,
                                                build_targets(outputs, target, stretched, DEFAULT_HYP["iou_t"])):
        assert (tbox[:, :2] == 0).all()
        assigned += len(b)
        p[b, a, gj, gi, :2] = edge_logit
        p[b, a, gj, gi, 2:4] = torch.log(tbox[:, 2:4] / (head.anchors[a] / head.stride))
    assert assigned > 0
    _, items = compute_loss(outputs, target, stretched)
    assert items[0].abs() < 1e-5
    _, items_plain = compute_loss(outputs, target, plain)
    assert items_plain[0] > 0.05  # the same logits put the centre 0.077 of a cell inside: GIoU < 1
    assert items_plain[0].item() == pytest.approx(box_term_by_hand(plain, outputs, target, 1.0), rel=1e-5)
