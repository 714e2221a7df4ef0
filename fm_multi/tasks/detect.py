"""Object detection with the dense per-patch head: target assignment, loss, decoding.

Assignment (FCOS-style centre sampling): a patch is positive for a ground-truth box when its
centre lies inside the box and within `radius` patches of the box centre; the patch holding the
box centre is always positive, so small objects are never left without a patch. A patch claimed
by several boxes takes the smallest. Loss = sigmoid focal loss over all patches and classes,
normalised by the number of positives, + GIoU and L1 on positive boxes.

Decoding takes a second look at each box (`decode_with_crops`): the box is cut from the full-size
picture and classified by the classification head, which sees the object at 64 px where the detector
saw it at a few patches. Each class is scored sqrt(detector probability x classifier probability), the
box is reported under its CLASSES_PER_BOX best classes (a box the two heads are split on is listed
once per class, the runner-up with its lower score, as torchvision's RetinaNet and FCOS list
anchor-class pairs), and the boxes are suppressed again per class. The detector finds objects better
than it names them; `fm-multi eval` reports mAP with the second look and without it.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import batched_nms, box_area, generalized_box_iou_loss, sigmoid_focal_loss

from fm_multi.preprocess import image_to_tensor
from fm_multi.tasks import classify as classify_task

LOSS_WEIGHTS = {"focal": 1.0, "giou": 2.0, "l1": 5.0}
CROP_MARGIN = 0.1       # crops are widened by this share of the box on each side: classify pictures have a border
CANDIDATE_SCORE = 0.05  # the detector score a box needs for a second look
# Class hypotheses a box may be reported under after the second look. On the 500 val scenes, with the
# stage 16 weights: mAP@0.5 0.472 (1), 0.485 (2), 0.489 (3), while boxes scoring >= 0.3, what the app
# shows by default, went from 3.95 to 3.99 per scene: a runner-up class rarely reaches the slider.
CLASSES_PER_BOX = 3


def collate(examples: list[tuple], image_size: int) -> dict:
    """[(PIL image, {"boxes": (N, 4) xyxy pixels, "labels": (N,)})] -> pixels and normalised targets."""
    pixels, targets = [], []
    for img, t in examples:
        w, h = img.size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        pixels.append(image_to_tensor(img, image_size))
        targets.append({"boxes": torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4) / scale,
                        "labels": torch.as_tensor(t["labels"], dtype=torch.long).reshape(-1)})
    return {"pixels": torch.stack(pixels), "targets": targets}


def assign(centres: torch.Tensor, boxes: torch.Tensor, grid: int, radius: float = 1.5) -> torch.Tensor:
    """centres (N, 2), boxes (M, 4) normalised -> (N,) index of the assigned box, -1 for background."""
    N = centres.size(0)
    if boxes.numel() == 0:
        return torch.full((N,), -1, dtype=torch.long, device=centres.device)
    cx, cy = centres[:, 0:1], centres[:, 1:2]                                   # (N, 1)
    inside = (cx > boxes[:, 0]) & (cx < boxes[:, 2]) & (cy > boxes[:, 1]) & (cy < boxes[:, 3])  # (N, M)
    bc = (boxes[:, :2] + boxes[:, 2:]) / 2                                      # (M, 2)
    near = ((centres[:, None, :] - bc[None]).abs() <= radius / grid).all(-1)   # (N, M)
    candidate = inside & near
    home = (bc.clamp(0, 1 - 1e-6) * grid).long()                               # patch holding each centre
    candidate[home[:, 1] * grid + home[:, 0], torch.arange(boxes.size(0))] = True
    area = box_area(boxes)[None].expand(N, -1).masked_fill(~candidate, float("inf"))
    best_area, best = area.min(dim=1)
    return torch.where(torch.isfinite(best_area), best, torch.full_like(best, -1))


def loss(model, batch) -> tuple[torch.Tensor, dict]:
    out = model("detect", pixels=batch["pixels"])
    logits, boxes = out["logits"].float(), out["boxes"]
    grid = int(round(logits.size(1) ** 0.5))
    cls_target = torch.zeros_like(logits)
    pred_boxes, gt_boxes = [], []
    for b, t in enumerate(batch["targets"]):
        idx = assign(out["centres"], t["boxes"].to(logits.device), grid)
        pos = idx >= 0
        cls_target[b, pos, t["labels"].to(logits.device)[idx[pos]]] = 1.0
        pred_boxes.append(boxes[b, pos])
        gt_boxes.append(t["boxes"].to(logits.device)[idx[pos]])
    pred, gt = torch.cat(pred_boxes), torch.cat(gt_boxes)
    n_pos = max(pred.size(0), 1)
    terms = {"focal": sigmoid_focal_loss(logits, cls_target, reduction="sum") / n_pos}
    if pred.numel():
        terms["giou"] = generalized_box_iou_loss(pred, gt, reduction="mean")
        terms["l1"] = F.l1_loss(pred, gt)
    else:  # images without objects: keep the graph connected, add nothing
        terms["giou"] = terms["l1"] = boxes.sum() * 0.0
    total = sum(LOSS_WEIGHTS[k] * v for k, v in terms.items())
    return total, {"loss": total.detach(), **{k: v.detach() for k, v in terms.items()}}


def decode(out: dict, index: int, width: int, height: int, labels: list[str], threshold: float = 0.3,
           iou: float = 0.5, max_boxes: int = 100, with_patch: bool = False) -> list[dict]:
    """One image's head outputs -> [{"label", "score", "box": [x0, y0, x1, y1]}] in input pixels.

    with_patch adds "patch", the index of the patch that predicted the box (for explanations).
    """
    scores, classes = out["logits"][index].float().sigmoid().max(dim=-1)   # (N,)
    patches = torch.nonzero(scores >= threshold).flatten()
    boxes = out["boxes"][index][patches] * torch.tensor([width, height, width, height], device=scores.device)
    scores, classes = scores[patches], classes[patches]
    order = batched_nms(boxes, scores, classes, iou)[:max_boxes]
    dets = [{"label": labels[int(classes[i])], "score": round(float(scores[i]), 4),
             "box": [round(float(v), 1) for v in boxes[i]]} for i in order]
    if with_patch:
        for d, i in zip(dets, order):
            d["patch"] = int(patches[i])
    return dets


def crops(image: Image.Image, boxes: list[list[float]], size: int, margin: float = CROP_MARGIN) -> torch.Tensor:
    """Boxes (xyxy pixels of `image`) -> (N, 3, size, size) classifier input, each box widened by
    `margin` of its width and height on every side (within the picture)."""
    W, H = image.size
    out = []
    for x0, y0, x1, y1 in boxes:
        mw, mh = (x1 - x0) * margin, (y1 - y0) * margin
        out.append(image_to_tensor(image.crop((max(0.0, x0 - mw), max(0.0, y0 - mh),
                                               min(W, x1 + mw), min(H, y1 + mh))), size))
    return torch.stack(out)


def predict(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """pixels (B, 3, H, W) -> model.forward_detect's outputs, each patch's averaged with those of its mirror
    patch in the mirror image (its box mirrored back), in one batch. Training flips half its scenes
    (streams.augment_detect), so both views hold the same objects."""
    B, p = pixels.size(0), model.config.patch_size
    h, w = pixels.size(2) // p, pixels.size(3) // p
    both = model.forward_detect(torch.cat([pixels, pixels.flip(-1)]))
    logits = both["logits"].float().view(2, B, h, w, -1)
    boxes = both["boxes"].view(2, B, h, w, 4)
    mirrored = boxes[1].flip(2)  # the mirror's patch grid read right to left, its boxes' x reflected
    mirrored = torch.stack([1 - mirrored[..., 2], mirrored[..., 1], 1 - mirrored[..., 0], mirrored[..., 3]], dim=-1)
    return {"logits": ((logits[0] + logits[1].flip(2)) / 2).view(B, h * w, -1),
            "boxes": ((boxes[0] + mirrored) / 2).view(B, h * w, 4), "centres": both["centres"]}


def crop_classifier(model, labels: dict, temperature: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The classification head as detection's second look (crops -> class probabilities, logits divided
    by `temperature`), or None when the two heads name different classes. Each crop is seen with its
    mirror image but without classify()'s centre view: crops already sit close around their object, and
    on 500 val scenes that view left mAP@0.5 where it was (0.4719 -> 0.4725) for twice the crops' compute."""
    if labels["classify"] != labels["detect"]:
        return None
    device = next(model.parameters()).device

    def probabilities(crops: torch.Tensor) -> torch.Tensor:
        return (classify_task.predict(model, crops.to(device)) / temperature).softmax(dim=-1)
    return probabilities


def decode_with_crops(out: dict, index: int, image: Image.Image, labels: list[str],
                      classify: Callable[[torch.Tensor], torch.Tensor] | None, crop_size: int,
                      threshold: float = 0.3, iou: float = 0.4, with_patch: bool = False,
                      classes_per_box: int = CLASSES_PER_BOX) -> list[dict]:
    """decode(), then a second look at every box the detector scores at least CANDIDATE_SCORE (or
    `threshold`, if lower); the boxes scoring at least `threshold` after it are returned, best first.

    `classify` maps crops (N, 3, crop_size, crop_size) to class probabilities (N, C) over the same
    labels (see crop_classifier). None means no second look: plain decode() with its own IoU, 0.5, and
    `iou` unused. Each class c of a box scores sqrt(p_detector(c) x p_classifier(c)); the box is listed
    under its `classes_per_box` best classes, and the boxes are suppressed again per class. The
    candidates do not depend on `threshold` above CANDIDATE_SCORE, so a higher threshold only removes
    boxes, as a slider should. IoU 0.4 rather than decode's 0.5: on 200 val scenes it gave mAP@0.5 0.300
    against 0.291 (0.5) and 0.290 (0.3), with 15% fewer boxes, as partial boxes of one object now agree
    on its class.
    """
    if classify is None:
        return decode(out, index, image.size[0], image.size[1], labels, threshold, with_patch=with_patch)
    dets = decode(out, index, image.size[0], image.size[1], labels, min(threshold, CANDIDATE_SCORE), iou,
                  with_patch=True)
    if not dets:
        return []
    p_det = out["logits"][index][[d["patch"] for d in dets]].float().sigmoid()          # (N, C)
    p_cls = classify(crops(image, [d["box"] for d in dets], crop_size)).float().to(p_det.device)
    k = min(classes_per_box, p_det.size(1))
    scores, classes = (p_det * p_cls).sqrt().cpu().topk(k, dim=-1)                      # (N, k)
    which = torch.arange(len(dets)).repeat_interleave(k)                    # the box of each hypothesis
    scores, classes = scores.flatten(), classes.flatten()
    boxes = torch.tensor([d["box"] for d in dets])[which]
    keep = [int(i) for i in batched_nms(boxes, scores, classes, iou) if scores[i] >= threshold]
    refined = [{"label": labels[int(classes[i])], "score": round(float(scores[i]), 4),
                "box": dets[which[i]]["box"]} for i in keep]
    if with_patch:
        for d, i in zip(refined, keep):
            d["patch"] = dets[which[i]]["patch"]
    return refined
