"""Box formats, IoU/GIoU, class-aware NMS and the letterbox-to-original coordinate mapping.

Formats: xyxy = (x1, y1, x2, y2) corners; xywh = (x_center, y_center, width, height). Pure torch (no
torchvision), so everything runs on the CPU test machine and on a GPU alike.
"""
import torch


def xywh2xyxy(x):
    """(..., 4) centre/size boxes -> corner boxes (a new tensor)."""
    y = x.clone()
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def xyxy2xywh(x):
    """(..., 4) corner boxes -> centre/size boxes (a new tensor)."""
    y = x.clone()
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def box_area(boxes):
    return (boxes[..., 2] - boxes[..., 0]).clamp(0) * (boxes[..., 3] - boxes[..., 1]).clamp(0)


def box_iou(a, b):
    """IoU of every box in a (N, 4) with every box in b (M, 4), both xyxy -> (N, M)."""
    top_left = torch.max(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.min(a[:, None, 2:4], b[None, :, 2:4])
    inter = (bottom_right - top_left).clamp(0).prod(2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=1e-9)


def bbox_iou(box1, box2, x1y1x2y2=True, giou=False, eps=1e-9):
    """Elementwise IoU (or GIoU) of matching rows: box1 and box2 are (n, 4) (or broadcastable), -> (n,).

    GIoU = IoU - (enclosing area - union) / enclosing area (Rezatofighi et al. 2019): in [-1, 1] and still
    informative when the boxes do not overlap, which is why the loss uses 1 - GIoU.
    """
    if not x1y1x2y2:
        box1, box2 = xywh2xyxy(box1), xywh2xyxy(box2)
    w1, h1 = box1[..., 2] - box1[..., 0], box1[..., 3] - box1[..., 1]
    w2, h2 = box2[..., 2] - box2[..., 0], box2[..., 3] - box2[..., 1]
    inter_w = (torch.min(box1[..., 2], box2[..., 2]) - torch.max(box1[..., 0], box2[..., 0])).clamp(0)
    inter_h = (torch.min(box1[..., 3], box2[..., 3]) - torch.max(box1[..., 1], box2[..., 1])).clamp(0)
    inter = inter_w * inter_h
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not giou:
        return iou
    enclose_w = torch.max(box1[..., 2], box2[..., 2]) - torch.min(box1[..., 0], box2[..., 0])
    enclose_h = torch.max(box1[..., 3], box2[..., 3]) - torch.min(box1[..., 1], box2[..., 1])
    enclose = enclose_w * enclose_h + eps
    return iou - (enclose - union) / enclose


def nms(boxes, scores, classes, iou_thres, max_keep=None, block=512):
    """Greedy class-aware NMS: indices of the kept boxes, highest score first.

    A box is dropped when a higher-scoring kept box of the same class overlaps it with IoU > iou_thres,
    exactly as the classic one-box-at-a-time loop, but resolved a block of `block` boxes at a time: first
    against everything kept before the block, then inside the block by iterating
    keep_j = alive_j and not any(keep_i and overlaps(i, j), i < j) to its fixed point (unique, since keep_j
    depends only on earlier boxes; reached after at most `block` rounds, usually a handful).
    Memory stays O(block^2 + kept * block) however many candidates there are. Stops once max_keep are kept.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes, classes = boxes[order], classes[order]
    kept = torch.zeros(0, dtype=torch.long, device=boxes.device)
    for start in range(0, len(order), block):
        idx = torch.arange(start, min(start + block, len(order)), device=boxes.device)
        alive = torch.ones(len(idx), dtype=torch.bool, device=boxes.device)
        if len(kept):
            clash = (box_iou(boxes[kept], boxes[idx]) > iou_thres) & (classes[kept, None] == classes[None, idx])
            alive = ~clash.any(0)
        suppresses = (box_iou(boxes[idx], boxes[idx]) > iou_thres) & (classes[idx, None] == classes[None, idx])
        suppresses = suppresses.triu(1)  # only a higher-scoring (earlier) box suppresses a later one
        keep = alive
        while True:
            new_keep = alive & ~(suppresses & keep[:, None]).any(0)
            if torch.equal(new_keep, keep):
                break
            keep = new_keep
        kept = torch.cat((kept, idx[keep]))
        if max_keep is not None and len(kept) >= max_keep:
            kept = kept[:max_keep]
            break
    return order[kept]


def non_max_suppression(pred, conf_thres=0.001, iou_thres=0.6, max_det=300, classes=None, max_candidates=30_000):
    """Per image detections from eval-mode model output.

    pred: (B, N, 5 + nc) with xywh in pixels, objectness and class probabilities (as `Darknet.eval()` gives).
    Returns a list of B tensors (n, 6): x1, y1, x2, y2, conf, cls, sorted by conf descending, n <= max_det.
    conf = objectness * class probability; every class with conf > conf_thres gives a detection (multi-label,
    as Ultralytics 2020); NMS only suppresses boxes of the same class. `classes` keeps only those class ids.
    Only the `max_candidates` most confident detections enter NMS (an untrained model at conf 0.001 can
    offer millions; the cap bounds the time, as in later Ultralytics versions).
    """
    pred = pred.float()
    output = []
    for x in pred:
        x = x[x[:, 4] > conf_thres]  # a box whose objectness fails cannot have a class conf above it
        box = xywh2xyxy(x[:, :4])
        conf = x[:, 5:] * x[:, 4:5]
        i, j = (conf > conf_thres).nonzero(as_tuple=True)
        det = torch.cat((box[i], conf[i, j, None], j[:, None].float()), 1)
        if classes is not None:
            det = det[(det[:, 5:6] == torch.as_tensor(classes, device=det.device, dtype=det.dtype)).any(1)]
        det = det[torch.isfinite(det).all(1)]
        if len(det) > max_candidates:
            det = det[det[:, 4].topk(max_candidates).indices]
        keep = nms(det[:, :4], det[:, 4], det[:, 5], iou_thres, max_keep=max_det)
        output.append(det[keep])
    return output


def clip_coords(boxes, shape):
    """Clamp xyxy boxes (in place) to an image of shape (height, width)."""
    boxes[:, 0].clamp_(0, shape[1])
    boxes[:, 1].clamp_(0, shape[0])
    boxes[:, 2].clamp_(0, shape[1])
    boxes[:, 3].clamp_(0, shape[0])
    return boxes


def scale_coords(img1_shape, coords, img0_shape, ratio_pad=None):
    """Map xyxy boxes from a letterboxed image of shape img1_shape (h, w) back to the original image of shape
    img0_shape (h, w), clipped to it. Returns a new tensor (coords is not modified).

    ratio_pad: (gain, (pad_w, pad_h)) as recorded by the letterbox (gain a number or a (gain, gain) pair);
    without it, the gain and centred padding are recomputed from the two shapes.
    """
    coords = coords.clone().float()
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        pad = (img1_shape[1] - img0_shape[1] * gain) / 2, (img1_shape[0] - img0_shape[0] * gain) / 2
    else:
        gain = ratio_pad[0]
        gain = float(gain[0]) if isinstance(gain, (tuple, list)) else float(gain)
        pad = ratio_pad[1]
    coords[:, [0, 2]] -= pad[0]
    coords[:, [1, 3]] -= pad[1]
    coords[:, :4] /= gain
    return clip_coords(coords, img0_shape[:2])
