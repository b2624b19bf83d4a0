"""YOLOv3 (Redmon & Farhadi 2018, "YOLOv3: An Incremental Improvement"): a one-stage detector.

A registry classifier is the backbone (``darknet_tiny`` by default, read by
:class:`~vislab.models.segmentation.BackboneFeatures`); three of its stages (strides 4/8/16 on
the 64 px generated scenes, as the other vislab detectors: the objects are 11-42 px, and the
paper's strides 8/16/32 would leave a 2x2 grid for the largest) feed a neck that, from the
coarsest map down, upsamples x2 and **concatenates** (not adds, as the FPN does) a 1x1-reduced
copy of the coarser features with the finer stage, then mixes them with 1x1 / 3x3 / 1x1 convs
(:class:`ConcatNeck`).  Per scale a 3x3 conv and a 1x1 output conv give, per cell and for each of
the scale's 3 anchors, ``4 + 1 + C`` numbers: ``(tx, ty, tw, th)``, the objectness logit and one
sigmoid logit per class (multi-label: no softmax, no background class).

Anchors: 9 (width, height) shapes, sorted by area, three per scale (the smallest on the finest);
learned by k-means on the training boxes with the ``1 - IoU`` distance
(:func:`~vislab.detection.anchors.kmeans_anchors`, YOLOv2's "dimension clusters").  The model
cannot see the data, so the recipe holds them (``model.kwargs.anchors``, computed once from its
6,000 training scenes; a run records its kwargs and the model keeps them in a buffer).  On those
scenes' 15,016 boxes their mean best IoU is 0.822, against 0.704 for RetinaNet's hand-picked
12/24/48 px x ratios 0.5/1/2 (:func:`anchor_report`).

Decoding: a cell ``(i, j)`` of stride ``s`` with anchor ``(a_w, a_h)`` predicts the centre
``((j + sigmoid(tx)) s, (i + sigmoid(ty)) s)`` and the size ``(a_w e^tw, a_h e^th)``.

Training (the model returns ``{"loss", "box", "obj", "cls"}``, :func:`yolo_loss`): each object is
the responsibility of the ONE anchor, over all scales, whose shape best matches its own (IoU of
the (w, h) pairs placed on a common corner), at the cell of that scale holding its centre
(:func:`assign_targets`; when two objects claim the same anchor and cell the later one keeps
it, as Darknet's loop overwrites).  Box term: the paper's sum of squared errors on the t-values,
``(sigmoid(tx) - tx*)^2 + (sigmoid(ty) - ty*)^2 + (tw - tw*)^2 + (th - th*)^2`` with
``tx* = cx / s - j`` and ``tw* = log(w / a_w)``, on the responsible anchors; objectness: binary
cross-entropy, target 1 on the responsible anchors and 0 elsewhere, except that an anchor that
is not responsible but whose predicted box overlaps some object with IoU > ``ignore_thresh``
(0.5) adds nothing (the paper's ignore rule); classes: per-class sigmoid binary cross-entropy on
the responsible anchors.  Each term is a sum over the batch divided by the batch size (Darknet's
per-image sum); computed in float32 (autocast safe).

Inference (eval mode returns ``[dict(boxes, scores, labels)]`` per image): score = objectness x
class probability for every anchor and class; those above ``score_thresh`` (0.05), at most
``topk_candidates``, decoded and clipped to the image, class-wise NMS at ``nms_thresh`` (0.5),
the ``detections_per_img`` (100) best by decreasing score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.detection.anchors import mean_best_iou, wh_iou
from vislab.detection.boxes import box_convert, box_iou, clip_boxes_to_image
from vislab.detection.nms import batched_nms
from vislab.errors import UserError
from vislab.models.darknet import LeakyReLU01
from vislab.models.layers import ConvNormAct
from vislab.models.registry import register_model
from vislab.models.segmentation import BackboneFeatures

# k-means (1 - IoU) on the 15,016 boxes of the recipe's 6,000 training scenes, by area
SCENE_ANCHORS = ((25.7, 11.9), (12.4, 25.0), (22.4, 17.9), (19.0, 24.9), (33.5, 18.8), (18.1, 35.6),
                 (25.2, 28.4), (36.6, 28.0), (30.4, 38.2))
ANCHORS_PER_SCALE = 3
MAX_LOG_SCALE = math.log(1000.0 / 16)    # torchvision's clamp of exp() in box decoding


# RetinaNet's hand-picked anchors for the same scenes: 12/24/48 px x ratios (h / w) 0.5/1/2, as (w, h)
HAND_ANCHORS = tuple((s / math.sqrt(r), s * math.sqrt(r)) for s in (12, 24, 48) for r in (0.5, 1, 2))


def anchor_report(wh: Tensor, anchors: Tensor, hand: Tensor) -> dict[str, float]:
    """The mean best IoU (YOLOv2's "Avg IOU") of boxes ``wh`` ``Tensor[N, 2]`` with learned
    ``anchors`` ``Tensor[K, 2]`` and with hand-picked ones ``Tensor[M, 2]``."""
    return {"kmeans": mean_best_iou(wh, anchors), "hand": mean_best_iou(wh, hand)}


def anchor_note(boxes: Tensor, anchors) -> str:
    """The line a YOLOv3 run prints when its data is built: the anchors' mean best IoU with the
    training boxes ``Tensor[N, 4]``, against :data:`HAND_ANCHORS`'."""
    wh = boxes[:, 2:] - boxes[:, :2]
    r = anchor_report(wh, torch.as_tensor(anchors, dtype=torch.float32), torch.tensor(HAND_ANCHORS))
    return (f"anchors: mean best IoU with the {len(wh)} training boxes {r['kmeans']:.3f} (hand-picked "
            f"12/24/48 px x ratios 0.5/1/2: {r['hand']:.3f})")


# --------------------------------------------------------------------------- neck and head

class ConcatNeck(nn.Module):
    """YOLOv3's neck: from the coarsest map to the finest, ``f_i = mix_i(cat(up2(reduce(f_{i+1})), C_i))``.

    Args:
        in_chs: channels of the backbone maps, finest first (each stride half the next).
        neck_chs: channels of each scale's output ``f_i``; the route to the next finer scale is
            a 1x1 conv to ``neck_chs // 2``, upsampled x2 (nearest) and concatenated, so scale ``i``
            mixes ``neck_chs // 2 + in_chs[i]`` channels (the coarsest only ``in_chs[-1]``).
    """

    def __init__(self, in_chs: Sequence[int], neck_chs: int, act_layer: type[nn.Module] = LeakyReLU01) -> None:
        super().__init__()
        n = len(in_chs)
        self.mix_in_chs = [c + (neck_chs // 2 if i < n - 1 else 0) for i, c in enumerate(in_chs)]
        self.mix = nn.ModuleList(nn.Sequential(ConvNormAct(c, neck_chs, 1, act_layer=act_layer),
                                               ConvNormAct(neck_chs, 2 * neck_chs, 3, act_layer=act_layer),
                                               ConvNormAct(2 * neck_chs, neck_chs, 1, act_layer=act_layer))
                                 for c in self.mix_in_chs)
        self.reduce = nn.ModuleList(ConvNormAct(neck_chs, neck_chs // 2, 1, act_layer=act_layer)
                                    for _ in range(n - 1))

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:   # [(B, C_i, H_i, W_i)] -> [(B, N, H_i, W_i)]
        x = self.mix[-1](feats[-1])
        out = [x]
        for i in range(len(feats) - 2, -1, -1):
            up = F.interpolate(self.reduce[i](x), size=feats[i].shape[-2:], mode="nearest")
            x = self.mix[i](torch.cat([up, feats[i]], dim=1))
            out.insert(0, x)
        return out


class YOLOHead(nn.Module):
    """Per scale a 3x3 conv + BN + LeakyReLU then a 1x1 conv to ``A * (5 + C)`` numbers.

    Args:
        in_chs: channels of each scale; num_anchors: anchors per cell ``A``; num_classes: ``C``.
        prior_prob: initial objectness probability (bias ``-log((1 - p) / p)``, as RetinaNet's
            prior: ~1,000 anchors per scene and a few objects).
    """

    def __init__(self, in_chs: int, num_scales: int, num_anchors: int, num_classes: int,
                 prior_prob: float = 0.01, act_layer: type[nn.Module] = LeakyReLU01) -> None:
        super().__init__()
        self.num_anchors, self.num_outputs = num_anchors, 5 + num_classes
        self.convs = nn.ModuleList(ConvNormAct(in_chs, 2 * in_chs, 3, act_layer=act_layer) for _ in range(num_scales))
        self.out = nn.ModuleList(nn.Conv2d(2 * in_chs, num_anchors * self.num_outputs, 1) for _ in range(num_scales))
        self.init_weights(prior_prob)

    def init_weights(self, prior_prob: float = 0.01) -> None:
        for conv in self.out:
            nn.init.normal_(conv.weight, std=0.01)
            bias = conv.bias.detach().view(self.num_anchors, self.num_outputs)
            bias.zero_()
            bias[:, 4] = -math.log((1 - prior_prob) / prior_prob)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """``(B, sum H*W*A, 5 + C)``: per scale, cell by cell (rows first), then anchor."""
        out = []
        for conv, last, f in zip(self.convs, self.out, feats):
            y = last(conv(f))
            b, _, h, w = y.shape
            out.append(y.reshape(b, self.num_anchors, self.num_outputs, h, w).permute(0, 3, 4, 1, 2)
                       .reshape(b, -1, self.num_outputs))
        return torch.cat(out, 1)


# --------------------------------------------------------------------------- grid, assignment, loss

def make_grid(grid_sizes: Sequence[tuple[int, int]], strides: Sequence[int], anchors: Tensor) -> Tensor:
    """Per prediction ``Tensor[sum H*W*A, 5]``: ``(j, i, stride, a_w, a_h)``, in the head's order;
    ``anchors`` ``Tensor[L * A, 2]`` holds scale ``l``'s anchors at rows ``l*A .. l*A + A - 1``."""
    if len(anchors) != ANCHORS_PER_SCALE * len(grid_sizes):
        raise ValueError(f"{len(anchors)} anchors for {len(grid_sizes)} scales; give {ANCHORS_PER_SCALE} per scale")
    out = []
    for level, ((h, w), s) in enumerate(zip(grid_sizes, strides)):
        a = anchors[level * ANCHORS_PER_SCALE:(level + 1) * ANCHORS_PER_SCALE].float()
        i, j = torch.meshgrid(torch.arange(h, device=a.device), torch.arange(w, device=a.device), indexing="ij")
        cells = torch.stack([j, i, torch.full_like(i, s)], -1).reshape(-1, 1, 3).float().expand(-1, len(a), 3)
        out.append(torch.cat([cells, a[None].expand(h * w, -1, -1)], -1).reshape(-1, 5))
    return torch.cat(out)


def decode(t: Tensor, grid: Tensor) -> Tensor:
    """Boxes ``(..., 4)`` xyxy in pixels from t-values ``(..., 4)`` and the rows of :func:`make_grid`."""
    j, i, s, aw, ah = grid.unbind(-1)
    cx = (j + torch.sigmoid(t[..., 0])) * s
    cy = (i + torch.sigmoid(t[..., 1])) * s
    w = aw * torch.exp(t[..., 2].clamp(max=MAX_LOG_SCALE))
    h = ah * torch.exp(t[..., 3].clamp(max=MAX_LOG_SCALE))
    return box_convert(torch.stack([cx, cy, w, h], -1), "cxcywh", "xyxy")


def assign_targets(boxes: Tensor, anchors: Tensor, grid_sizes: Sequence[tuple[int, int]],
                   strides: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The responsible prediction of each object of one image and its target t-values.

    Args:
        boxes: ``Tensor[N, 4]`` xyxy pixels; anchors: ``Tensor[L * 3, 2]``; grid_sizes / strides:
            per scale, as the head's maps.

    Returns ``(index Tensor[N] int64, t Tensor[N, 4])``: ``index`` in the flat order of
    :func:`make_grid`; ``t = (cx / s - j, cy / s - i, log(w / a_w), log(h / a_h))``.  The anchor
    is the best IoU of shapes over all scales; the cell, the one of that scale holding the centre.
    """
    boxes = boxes.float()
    cxcywh = box_convert(boxes, "xyxy", "cxcywh")
    best = wh_iou(cxcywh[:, 2:], anchors.float()).argmax(1)                    # (N,) over all scales
    level, a = best // ANCHORS_PER_SCALE, best % ANCHORS_PER_SCALE
    sizes = torch.tensor([h * w * ANCHORS_PER_SCALE for h, w in grid_sizes], device=boxes.device)
    offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s = torch.tensor(list(strides), device=boxes.device, dtype=torch.float32)[level]
    gw = torch.tensor([w for _, w in grid_sizes], device=boxes.device)[level]
    gh = torch.tensor([h for h, _ in grid_sizes], device=boxes.device)[level]
    j = (cxcywh[:, 0] / s).floor().long().clamp(min=0, max=None)
    i = (cxcywh[:, 1] / s).floor().long().clamp(min=0, max=None)
    j, i = torch.minimum(j, gw - 1), torch.minimum(i, gh - 1)
    index = offsets[level] + (i * gw + j) * ANCHORS_PER_SCALE + a
    anchor = anchors.float()[best]
    t = torch.stack([cxcywh[:, 0] / s - j, cxcywh[:, 1] / s - i,
                     torch.log(cxcywh[:, 2] / anchor[:, 0]), torch.log(cxcywh[:, 3] / anchor[:, 1])], -1)
    return index, t


def yolo_loss(pred: Tensor, grid: Tensor, anchors: Tensor, grid_sizes: Sequence[tuple[int, int]],
              strides: Sequence[int], targets: Sequence[dict[str, Tensor]], ignore_thresh: float = 0.5,
              box_weight: float = 1.0) -> dict[str, Tensor]:
    """YOLOv3's loss of a batch (see the module docstring).

    Args:
        pred: ``Tensor[B, P, 5 + C]`` of the head; grid: ``Tensor[P, 5]`` of :func:`make_grid`.
        anchors / grid_sizes / strides: as :func:`assign_targets`.
        targets: per image ``boxes`` ``Tensor[N, 4]`` (pixels, xyxy) and ``labels`` ``Tensor[N]``.
        ignore_thresh: a non-responsible prediction overlapping an object above this IoU is left
            out of the objectness term; box_weight: the box term's weight in ``loss``.

    Returns ``{"loss": box_weight * box + obj + cls, "box", "obj", "cls"}``, each a sum over the
    batch divided by the batch size.  Computed in float32.
    """
    pred, grid = pred.float(), grid.float()
    batch, num_classes = len(pred), pred.shape[-1] - 5
    obj_target = torch.zeros(pred.shape[:2], device=pred.device)
    obj_weight = torch.ones_like(obj_target)
    box = cls = pred.new_zeros(())
    for b, t in enumerate(targets):
        if len(t["boxes"]) == 0:
            continue
        gt = t["boxes"].to(pred)
        with torch.no_grad():                    # the ignore rule: good guesses are not negatives
            overlap = box_iou(decode(pred[b, :, :4], grid), gt).max(1).values
            obj_weight[b, overlap > ignore_thresh] = 0
        index, t_star = assign_targets(gt, anchors, grid_sizes, strides)
        obj_target[b, index] = 1
        obj_weight[b, index] = 1
        # the later object keeps an anchor and cell two objects claim (Darknet's overwrite)
        keep = torch.zeros(len(index), dtype=torch.bool, device=pred.device)
        last = {int(k): n for n, k in enumerate(index.tolist())}
        keep[list(last.values())] = True
        index, t_star, labels = index[keep], t_star[keep], t["labels"].to(pred.device)[keep]
        p = pred[b, index]
        xy = torch.sigmoid(p[:, :2])
        box = box + F.mse_loss(xy, t_star[:, :2], reduction="sum") + F.mse_loss(p[:, 2:4], t_star[:, 2:], reduction="sum")
        onehot = F.one_hot(labels, num_classes).to(p)
        cls = cls + F.binary_cross_entropy_with_logits(p[:, 5:], onehot, reduction="sum")
    obj = (F.binary_cross_entropy_with_logits(pred[..., 4], obj_target, reduction="none") * obj_weight).sum()
    box, obj, cls = box / batch, obj / batch, cls / batch
    return {"loss": box_weight * box + obj + cls, "box": box, "obj": obj, "cls": cls}


# --------------------------------------------------------------------------- the detector

class YOLOv3(nn.Module):
    """Backbone + concatenating neck + per-scale output convs; see the module docstring.

    Args:
        num_classes / in_chans: object classes (no background) and input channels.
        backbone / backbone_kwargs: a registry classifier with ``feature_info`` and its arguments.
        strides: the three backbone stages used, by stride (the last stage of each).
        anchors: ``3 * len(strides)`` (width, height) pairs in pixels; sorted by area here, the
            three smallest go to the finest scale.
        neck_chs: channels of the neck's outputs (see :class:`ConcatNeck`).
        prior_prob: initial objectness probability.
        ignore_thresh / box_weight: see :func:`yolo_loss`.
        score_thresh / nms_thresh / topk_candidates / detections_per_img: inference.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, backbone: str = "darknet_tiny",
                 backbone_kwargs: dict | None = None, strides: Sequence[int] = (4, 8, 16),
                 anchors: Sequence[Sequence[float]] = SCENE_ANCHORS, neck_chs: int = 64, prior_prob: float = 0.01,
                 ignore_thresh: float = 0.5, box_weight: float = 1.0, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, topk_candidates: int = 1000, detections_per_img: int = 100) -> None:
        super().__init__()
        anchors_t = torch.as_tensor([list(a) for a in anchors], dtype=torch.float32)
        if anchors_t.ndim != 2 or anchors_t.shape != (ANCHORS_PER_SCALE * len(strides), 2) or (anchors_t <= 0).any():
            raise UserError(f"model.kwargs.anchors must be {ANCHORS_PER_SCALE * len(strides)} positive (width, "
                            f"height) pairs, {ANCHORS_PER_SCALE} per stride of {list(strides)}; got {list(anchors)}")
        if not 0 < prior_prob < 1:
            raise UserError(f"model.kwargs.prior_prob must lie in (0, 1), got {prior_prob}")
        if list(strides) != sorted(strides):
            raise UserError(f"model.kwargs.strides {list(strides)} must increase, finest first")
        self.num_classes = num_classes
        self.backbone = BackboneFeatures(backbone, in_chans, **(backbone_kwargs or {}))
        self.stage_ids = self.backbone.stages_at(strides, backbone)
        self.strides = list(strides)
        self.register_buffer("anchors", anchors_t[torch.argsort(anchors_t.prod(1))])
        self.neck = ConcatNeck([self.backbone.channels[i] for i in self.stage_ids], neck_chs)
        self.head = YOLOHead(neck_chs, len(strides), ANCHORS_PER_SCALE, num_classes, prior_prob)
        self.loss_kwargs = {"ignore_thresh": ignore_thresh, "box_weight": box_weight}
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_candidates, self.detections_per_img = topk_candidates, detections_per_img

    def features(self, images: Tensor) -> list[Tensor]:
        """The neck's maps ``[(B, neck_chs, H / s, W / s)]``, finest first."""
        stages = self.backbone(images)
        return self.neck([stages[i] for i in self.stage_ids])

    def forward(self, images: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: the loss dict (``targets`` required); eval: detections per image."""
        feats = self.features(images)
        pred = self.head(feats)
        grid_sizes = [tuple(f.shape[-2:]) for f in feats]
        grid = make_grid(grid_sizes, self.strides, self.anchors)
        if self.training:
            if targets is None:
                raise ValueError("YOLOv3 in training mode needs targets (a dict of boxes and labels per image)")
            return yolo_loss(pred, grid, self.anchors, grid_sizes, self.strides, targets, **self.loss_kwargs)
        return self.postprocess(pred, grid, tuple(images.shape[-2:]))

    @torch.no_grad()
    def postprocess(self, pred: Tensor, grid: Tensor, image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """Scores objectness x class probability above ``score_thresh`` (at most
        ``topk_candidates``), decoded and clipped; class-wise NMS; the ``detections_per_img`` best."""
        out = []
        for p in pred.float():
            scores = (torch.sigmoid(p[:, 4:5]) * torch.sigmoid(p[:, 5:])).flatten()      # (P * C,)
            idx = (scores > self.score_thresh).nonzero().flatten()
            scores, top = scores[idx].topk(min(self.topk_candidates, len(idx)))
            idx = idx[top]
            k, labels = idx // self.num_classes, idx % self.num_classes
            boxes = clip_boxes_to_image(decode(p[k, :4], grid[k]), image_size)
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[:self.detections_per_img]
            out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return out


@register_model(kind="detection")
def yolov3(num_classes: int = 10, in_chans: int = 3, backbone: str = "darknet_tiny", backbone_kwargs: dict | None = None,
           strides: tuple[int, ...] = (4, 8, 16), anchors: tuple[tuple[float, float], ...] = SCENE_ANCHORS,
           neck_chs: int = 64, prior_prob: float = 0.01, ignore_thresh: float = 0.5, box_weight: float = 1.0,
           score_thresh: float = 0.05, nms_thresh: float = 0.5, topk_candidates: int = 1000,
           detections_per_img: int = 100) -> YOLOv3:
    """YOLOv3: Darknet stages of strides 4/8/16 (64 px scenes), a concatenating neck, 3 k-means
    anchors per scale, objectness + per-class sigmoid, the paper's one responsible anchor."""
    return YOLOv3(num_classes, in_chans, backbone, backbone_kwargs, tuple(strides),
                  tuple(tuple(a) for a in anchors), neck_chs, prior_prob, ignore_thresh, box_weight,
                  score_thresh, nms_thresh, topk_candidates, detections_per_img)


__all__ = ["ANCHORS_PER_SCALE", "HAND_ANCHORS", "SCENE_ANCHORS", "anchor_note", "ConcatNeck", "YOLOHead", "YOLOv3", "anchor_report",
           "assign_targets", "decode", "make_grid", "yolo_loss", "yolov3"]
