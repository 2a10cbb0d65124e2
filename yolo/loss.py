"""YOLOv3 training loss (Ultralytics 2020): GIoU box loss, BCE objectness, BCE classes.

Scaling, chosen to match ultralytics/yolov3 of 2020 so its hyperparameters (`yolo.hyp`) apply unchanged:
- every term is a mean: box over the assigned anchors, objectness over all anchor cells of a head, class
  over assigned anchors x classes; the three heads' means are summed;
- the terms are weighted by hyp["giou"], hyp["obj"], hyp["cls"]; the box term is (1 - GIoU) ** hyp["giou_pow"]
  (1; the seed thread's row 7 squares it); box centres are decoded as the model does (its heads' scale_xy);
- the returned loss is multiplied by batch_size / NOMINAL_BATCH_SIZE (64), as that train.py did after the
  call. So gradients are proportional to the number of images: accumulating them over 64 / batch_size steps
  gives the gradient of the mean loss of 64 images whatever the batch size. The trainer must NOT rescale.
`loss_items` are the unscaled per-batch values [box, obj, cls, total], comparable across batch sizes.
"""
import torch
import torch.nn as nn

from .boxes import bbox_iou
from .hyp import DEFAULT_HYP

NOMINAL_BATCH_SIZE = 64


def compute_loss(outputs, targets, model, hyp=None):
    """outputs: train-mode model output (list of (B, na, ny, nx, 5 + nc) per head).
    targets: (n, 6) rows [image_index, class, x_center, y_center, w, h], xywh normalized to the input image.
    model: the Darknet (or a DDP/DataParallel wrapper of it), for its heads' anchors, strides and classes.
    hyp: hyperparameters (missing keys take DEFAULT_HYP).
    Returns (loss: 0-dim tensor with grad, loss_items: detached float tensor [box, obj, cls, total])."""
    hyp = {**DEFAULT_HYP, **(hyp or {})}
    model = _unwrap(model)
    device = outputs[0].device
    targets = targets.to(device=device, dtype=torch.float32)
    _check_targets(targets, model.num_classes, outputs[0].shape[0])
    bce_cls = _bce(hyp["cls_pw"], hyp["fl_gamma"], device)
    bce_obj = _bce(hyp["obj_pw"], hyp["fl_gamma"], device)

    lbox = lobj = lcls = torch.zeros((), device=device)
    for head, p, (b, a, gj, gi, tbox, tcls) in zip(model.yolo_layers, outputs,
                                                   build_targets(outputs, targets, model, hyp["iou_t"])):
        p = p.float()  # autocast may hand over fp16 logits; the loss is computed in fp32
        tobj = torch.zeros_like(p[..., 4])
        if len(b):
            ps = p[b, a, gj, gi]  # predictions of the assigned anchors
            anchors = head.anchors[a] / head.stride  # in grid cells, like tbox
            pbox = torch.cat((head.cell_offset(ps[:, :2]), torch.exp(ps[:, 2:4]).clamp(max=1e3) * anchors), 1)
            giou = bbox_iou(pbox, tbox, x1y1x2y2=False, giou=True)
            lbox = lbox + giou_loss(giou, hyp["giou_pow"])
            tobj[b, a, gj, gi] = giou.detach().clamp(0)  # objectness target: how well the box fits
            if head.nc > 1:
                tclass = torch.zeros_like(ps[:, 5:])
                tclass[torch.arange(len(b), device=device), tcls] = 1.0
                lcls = lcls + bce_cls(ps[:, 5:], tclass)
        lobj = lobj + bce_obj(p[..., 4], tobj)

    lbox, lobj, lcls = lbox * hyp["giou"], lobj * hyp["obj"], lcls * hyp["cls"]
    total = lbox + lobj + lcls
    batch_size = outputs[0].shape[0]
    loss = total * (batch_size / NOMINAL_BATCH_SIZE)
    return loss, torch.stack((lbox, lobj, lcls, total)).detach()


def giou_loss(giou, power=1.0):
    """Mean of (1 - GIoU) ** power over the assigned anchors: power 1 is the Ultralytics box loss, 2 the
    seed thread's `((1.0 - giou) ** 2).mean()`."""
    return (1.0 - giou).mean() if power == 1 else ((1.0 - giou) ** power).mean()


def build_targets(outputs, targets, model, iou_t):
    """Assign every target to the anchors of every head whose shape matches it (width/height IoU > iou_t).

    Returns per head (b, a, gj, gi, tbox, tcls): image, anchor and cell indices of each assignment, the target
    box in grid units as (offset of the centre inside its cell, width, height), and its class.
    """
    model = _unwrap(model)
    assignments = []
    for head, p in zip(model.yolo_layers, outputs):
        _, na, ny, nx, _ = p.shape
        anchors = head.anchors.to(targets.device) / head.stride
        t = targets * torch.tensor([1, 1, nx, ny, nx, ny], device=targets.device, dtype=targets.dtype)
        match = wh_iou(anchors, t[:, 4:6]) > iou_t  # (na, n)
        a, k = match.nonzero(as_tuple=True)
        t = t[k]
        b, c = t[:, 0].long(), t[:, 1].long()
        gxy = t[:, 2:4]
        gi = gxy[:, 0].long().clamp(0, nx - 1)  # a centre exactly on the right/bottom edge stays in the grid
        gj = gxy[:, 1].long().clamp(0, ny - 1)
        tbox = torch.cat((gxy - torch.stack((gi, gj), 1), t[:, 4:6]), 1)
        assignments.append((b, a, gj, gi, tbox, c))
    return assignments


def wh_iou(wh1, wh2):
    """IoU of (n, 2) and (m, 2) width/height pairs as if they shared a centre -> (n, m)."""
    wh1, wh2 = wh1[:, None], wh2[None]
    inter = torch.min(wh1, wh2).prod(2)
    return inter / (wh1.prod(2) + wh2.prod(2) - inter)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) around BCEWithLogitsLoss; used when hyp["fl_gamma"] > 0."""

    def __init__(self, bce, gamma, alpha=0.25):
        super().__init__()
        self.bce, self.gamma, self.alpha = bce, gamma, alpha
        self.bce.reduction = "none"

    def forward(self, pred, true):
        loss = self.bce(pred, true)
        prob = torch.sigmoid(pred)
        p_t = true * prob + (1 - true) * (1 - prob)
        alpha_factor = true * self.alpha + (1 - true) * (1 - self.alpha)
        return (loss * alpha_factor * (1.0 - p_t) ** self.gamma).mean()


def _bce(pos_weight, fl_gamma, device):
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight], device=device))
    return FocalLoss(bce, fl_gamma) if fl_gamma > 0 else bce


def _unwrap(model):
    """The Darknet inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def _check_targets(targets, num_classes, batch_size):
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(f"targets must be (n, 6) [image, class, x, y, w, h], got shape {tuple(targets.shape)}")
    if len(targets):
        cls, img = targets[:, 1], targets[:, 0]
        if cls.min() < 0 or cls.max() >= num_classes:
            raise ValueError(f"target class ids must be in [0, {num_classes}), got {cls.min():g}..{cls.max():g}")
        if img.min() < 0 or img.max() >= batch_size:
            raise ValueError(f"target image indices must be in [0, {batch_size}), got {img.min():g}..{img.max():g}")
