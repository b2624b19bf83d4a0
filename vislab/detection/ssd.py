"""SSD (Liu et al. 2016, "SSD: Single Shot MultiBox Detector"): a one-stage detector.

A registry classifier is the backbone (:class:`~vislab.models.segmentation.BackboneFeatures`
reads the stages of strides ``strides``); extra layers keep halving the last map (each a 1x1 conv
to half its channels then a 3x3 stride-2 conv, both + ReLU, as the paper's conv8-conv11), so the
detector sees several feature maps, fine to coarse.  On every map one 3x3 conv scores each
default box for ``C + 1`` classes (a softmax, background at index 0 as in the paper and
torchvision) and another regresses its 4 box deltas: small detectors on the fine maps for small
objects, on the coarse maps for large ones.

Default boxes (:class:`DefaultBoxGenerator`): map ``k`` of ``m`` has scale
``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)`` of the image side, a square of side
``s_k``, one of side ``sqrt(s_k s_{k+1})`` and, for each aspect ratio ``a``, a ``s_k sqrt(a) x
s_k / sqrt(a)`` box and its transpose.  The defaults are sized for the generated 64 px scenes,
whose objects are 10-44 px (square root of the area: median 24 px, 5-95 % 16-35 px; height /
width 0.45-2.4 for 90 % of them): with the maps of strides 4-64 (16x16 down to 1x1), ``s_min =
0.25``, ``s_max = 0.9`` (squares of 16, 26, 37, 47, 58 px) and ratios ``2`` on every map plus
``3`` on the two middle ones (SSD300's pattern), the training boxes' mean best IoU with a default
box is 0.72 and 99.9 % of them reach 0.5 (the paper's 0.2 / 0.9 gives 0.69 and 99.5 %; 0.15 /
0.75, 0.66 and 97.7 %), with about 12 default boxes of IoU >= 0.5 per object.

Training (the model returns ``{"loss", "cls", "box"}``): each ground truth is matched to its best
default box, and every default box to the ground truth it overlaps most when that IoU is >= 0.5
(:func:`ssd_match`, torchvision's ``SSDMatcher``); the classification term is the softmax
cross-entropy of the positives and of the ``neg_pos_ratio`` (3) times as many negatives of
highest background loss (:func:`~vislab.detection.sampling.hard_negative_mask`); the box term is
smooth L1 on the :class:`BoxCoder` deltas (weights 10, 10, 5, 5) of the positives; both are sums
over the batch divided by its number ``N`` of positives, 0 when ``N = 0`` (the paper's rule; the
mining keeps no negative in an image without positives, so dividing by ``max(N, 1)`` as
torchvision does gives the same numbers).

Inference (eval mode returns ``[dict(boxes, scores, labels)]`` per image, labels ``0..C-1`` as
in the targets): softmax; per class the ``topk_candidates`` best scores above ``score_thresh``,
decoded and clipped to the image; class-wise NMS at ``nms_thresh`` (0.45 in the paper, 0.5 here
as RetinaNet's) and the ``detections_per_img`` best.  The whole follows torchvision's
``models/detection/ssd.py``, whose matcher, loss and postprocessing the tests compare.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.detection.anchors import DefaultBoxGenerator
from vislab.detection.boxes import box_iou, clip_boxes_to_image
from vislab.detection.coder import BoxCoder
from vislab.detection.matcher import matched_targets
from vislab.detection.nms import batched_nms
from vislab.detection.sampling import hard_negative_mask
from vislab.errors import UserError
from vislab.models.registry import register_model
from vislab.models.segmentation import BackboneFeatures

DEFAULT_ASPECT_RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))


# --------------------------------------------------------------------------- extra layers and head

class ExtraLayers(nn.Module):
    """The maps after the backbone's: each a 1x1 conv to ``chs // 2`` + ReLU, then a 3x3 stride-2
    conv to ``chs`` + ReLU, halving the previous map (SSD's conv8_2 ... conv11_2).

    Args:
        in_chs: channels of the backbone's last map.
        out_chs: channels of each extra map.
    """

    def __init__(self, in_chs: int, out_chs: Sequence[int]) -> None:
        super().__init__()
        layers = []
        for c in out_chs:
            layers.append(nn.Sequential(nn.Conv2d(in_chs, c // 2, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(c // 2, c, 3, stride=2, padding=1), nn.ReLU(inplace=True)))
            in_chs = c
        self.layers = nn.ModuleList(layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:   # (B, C, H, W) -> [(B, C_j, H / 2^j, W / 2^j)]
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out


class SSDHead(nn.Module):
    """Per feature map, one 3x3 conv to ``A_k * (C + 1)`` class logits and one to ``A_k * 4``
    box deltas (no weight sharing across maps: each map has its own scale).

    Args:
        in_chs: channels of each map.
        num_anchors: default boxes per position of each map ``A_k``.
        num_classes: object classes ``C``; the logits have ``C + 1`` columns, background first.
    """

    def __init__(self, in_chs: Sequence[int], num_anchors: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.num_columns = num_classes + 1
        self.cls_logits = nn.ModuleList(nn.Conv2d(c, a * self.num_columns, 3, padding=1)
                                        for c, a in zip(in_chs, num_anchors))
        self.box_deltas = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(in_chs, num_anchors))
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform weights, zero biases (torchvision's SSD head)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _flatten(x: Tensor, n: int) -> Tensor:   # (B, A*n, H, W) -> (B, H*W*A, n)
        b, _, h, w = x.shape
        return x.reshape(b, -1, n, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, n)

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Logits ``(B, sum H*W*A, C + 1)`` and deltas ``(B, sum H*W*A, 4)``, in the boxes' order."""
        cls = [self._flatten(conv(f), self.num_columns) for conv, f in zip(self.cls_logits, feats)]
        box = [self._flatten(conv(f), 4) for conv, f in zip(self.box_deltas, feats)]
        return torch.cat(cls, 1), torch.cat(box, 1)


# --------------------------------------------------------------------------- matching and loss

def ssd_match(gt_boxes: Tensor, default_boxes: Tensor, iou_thresh: float = 0.5) -> Tensor:
    """SSD's matching of one image: ``Tensor[A]`` int64, the ground-truth index of each default
    box or -1 (background).

    Args:
        gt_boxes: ``Tensor[N, 4]``; default_boxes: ``Tensor[A, 4]``, both xyxy in pixels.

    Every default box whose best IoU is >= ``iou_thresh`` takes that ground truth; then every
    ground truth takes its own best default box, whatever the IoU (torchvision's
    ``SSDMatcher``; when two objects share a best default box, one of them gets it).  A ground truth
    that overlaps no default box at all (IoU 0) takes none.
    """
    if gt_boxes.ndim != 2 or gt_boxes.shape[-1] != 4 or default_boxes.ndim != 2 or default_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes {tuple(gt_boxes.shape)} and default_boxes {tuple(default_boxes.shape)} "
                         "must be (N, 4) and (A, 4)")
    matched = torch.full((len(default_boxes),), -1, dtype=torch.int64, device=default_boxes.device)
    if len(gt_boxes) == 0:
        return matched
    iou = box_iou(gt_boxes.to(default_boxes), default_boxes)                  # (N, A)
    best, best_gt = iou.max(dim=0)
    matched[best >= iou_thresh] = best_gt[best >= iou_thresh]
    best_iou, best_box = iou.max(dim=1)
    gt_idx = torch.arange(len(gt_boxes), device=matched.device)
    matched[best_box[best_iou > 0]] = gt_idx[best_iou > 0]
    return matched


def ssd_loss(cls_logits: Tensor, box_deltas: Tensor, default_boxes: Tensor, targets: Sequence[dict[str, Tensor]],
             coder: BoxCoder, iou_thresh: float = 0.5, neg_pos_ratio: float = 3.0, beta: float = 1.0
             ) -> dict[str, Tensor]:
    """SSD's loss of a batch.

    Args:
        cls_logits: ``Tensor[B, A, C + 1]`` (background first); box_deltas: ``Tensor[B, A, 4]``;
            default_boxes: ``Tensor[A, 4]``.
        targets: per image ``boxes`` ``Tensor[N, 4]`` (pixels, xyxy) and ``labels`` ``Tensor[N]``
            in ``0..C-1``.
        neg_pos_ratio: negatives kept per positive; beta: the smooth L1's switch point.

    Returns ``{"loss": cls + box, "cls": ..., "box": ...}``, each a sum over the batch divided by
    its number of positive default boxes (all 0 without one).  Computed in float32.
    """
    cls_logits, box_deltas, default_boxes = cls_logits.float(), box_deltas.float(), default_boxes.float()
    matched = torch.stack([ssd_match(t["boxes"], default_boxes, iou_thresh) for t in targets])   # (B, A)
    positive = matched >= 0
    gt_labels, gt_boxes = matched_targets(targets, matched)                    # (B, A), (B, A, 4)
    cls_target = (gt_labels + 1) * positive                                    # 0 = background
    per_anchor = F.cross_entropy(cls_logits.flatten(0, 1), cls_target.flatten(), reduction="none")
    per_anchor = per_anchor.view_as(cls_target)                                # (B, A)
    keep = hard_negative_mask(per_anchor, positive, neg_pos_ratio)
    num_pos = positive.sum().clamp(min=1)
    cls = (per_anchor * keep).sum() / num_pos

    b, a = positive.nonzero(as_tuple=True)
    if len(b):
        target = coder.encode(gt_boxes[b, a], default_boxes[a])
        box = F.smooth_l1_loss(box_deltas[b, a], target, beta=beta, reduction="sum") / num_pos
    else:
        box = box_deltas.sum() * 0
    return {"loss": cls + box, "cls": cls, "box": box}


# --------------------------------------------------------------------------- the detector

class SSD(nn.Module):
    """Backbone stages + extra layers + one 3x3 detector pair per map; see the module docstring.

    Args:
        num_classes / in_chans: object classes (the background is added) and input channels.
        backbone / backbone_kwargs: a registry classifier with ``feature_info`` and its arguments.
        strides: the backbone stages used, by stride (the last stage of each).
        extra_chs: channels of each extra map (each halves the previous one).
        aspect_ratios: per map (backbone's then extras'), the ratios besides 1 (each also ``1/a``).
        min_ratio / max_ratio: ``s_min`` and ``s_max``, fractions of the image side.
        iou_thresh / neg_pos_ratio / beta: see :func:`ssd_loss`.
        score_thresh / nms_thresh / topk_candidates / detections_per_img: inference.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, strides: Sequence[int] = (4, 8, 16),
                 extra_chs: Sequence[int] = (128, 128), aspect_ratios: Sequence[Sequence[float]] = DEFAULT_ASPECT_RATIOS,
                 min_ratio: float = 0.25, max_ratio: float = 0.9, iou_thresh: float = 0.5,
                 neg_pos_ratio: float = 3.0, beta: float = 1.0, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, topk_candidates: int = 400, detections_per_img: int = 100) -> None:
        super().__init__()
        if len(aspect_ratios) != len(strides) + len(extra_chs):
            raise UserError(f"{len(strides)} backbone maps and {len(extra_chs)} extra maps but "
                            f"{len(aspect_ratios)} lists of aspect_ratios: give one list per map")
        if not 0 < min_ratio <= max_ratio:
            raise UserError(f"model.kwargs.min_ratio {min_ratio} and max_ratio {max_ratio}: need 0 < min <= max")
        self.num_classes = num_classes
        self.backbone = BackboneFeatures(backbone, in_chans, **(backbone_kwargs or {}))
        self.stage_ids = self.backbone.stages_at(strides, backbone)
        in_chs = [self.backbone.channels[i] for i in self.stage_ids]
        self.extras = ExtraLayers(in_chs[-1], extra_chs)
        self.box_generator = DefaultBoxGenerator([list(r) for r in aspect_ratios], min_ratio, max_ratio)
        self.head = SSDHead(in_chs + list(extra_chs), self.box_generator.num_anchors_per_location(), num_classes)
        self.coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.loss_kwargs = {"iou_thresh": iou_thresh, "neg_pos_ratio": neg_pos_ratio, "beta": beta}
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_candidates, self.detections_per_img = topk_candidates, detections_per_img

    def features(self, images: Tensor) -> list[Tensor]:
        """The detection maps ``[(B, C_k, H_k, W_k)]``, finest first."""
        stages = self.backbone(images)
        maps = [stages[i] for i in self.stage_ids]
        return maps + self.extras(maps[-1])

    def default_boxes(self, images: Tensor, feats: Sequence[Tensor]) -> Tensor:
        """The default boxes ``Tensor[A, 4]`` in pixels (float32 whatever the autocast)."""
        grids = [tuple(f.shape[-2:]) for f in feats]
        return torch.cat(self.box_generator.grid_default_boxes(tuple(images.shape[-2:]), grids)).float()

    def forward(self, images: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: the loss dict (``targets`` required); eval: detections per image."""
        feats = self.features(images)
        cls, box = self.head(feats)
        boxes = self.default_boxes(images, feats)
        if self.training:
            if targets is None:
                raise ValueError("SSD in training mode needs targets (a dict of boxes and labels per image)")
            return ssd_loss(cls, box, boxes, targets, self.coder, **self.loss_kwargs)
        return self.postprocess(cls, box, boxes, tuple(images.shape[-2:]))

    @torch.no_grad()
    def postprocess(self, cls_logits: Tensor, box_deltas: Tensor, default_boxes: Tensor,
                    image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """torchvision's ``SSD.postprocess_detections``: softmax; per class the
        ``topk_candidates`` best scores above ``score_thresh``, decoded and clipped; class-wise
        NMS; the ``detections_per_img`` best, by decreasing score.  Labels ``0..C-1``."""
        out = []
        for logits, deltas in zip(cls_logits.float(), box_deltas.float()):
            scores_all = F.softmax(logits, dim=-1)
            boxes_all = clip_boxes_to_image(self.coder.decode(deltas, default_boxes.float()), image_size)
            boxes, scores, labels = [], [], []
            for k in range(1, scores_all.shape[-1]):
                score = scores_all[:, k]
                idx = (score > self.score_thresh).nonzero().flatten()
                score, top = score[idx].topk(min(self.topk_candidates, len(idx)))
                boxes.append(boxes_all[idx[top]])
                scores.append(score)
                labels.append(torch.full_like(top, k - 1))
            boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[:self.detections_per_img]
            out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return out


@register_model(kind="detection")
def ssd(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18", backbone_kwargs: dict | None = None,
        strides: tuple[int, ...] = (4, 8, 16), extra_chs: tuple[int, ...] = (128, 128),
        aspect_ratios: tuple[tuple[float, ...], ...] = DEFAULT_ASPECT_RATIOS, min_ratio: float = 0.25,
        max_ratio: float = 0.9, iou_thresh: float = 0.5, neg_pos_ratio: float = 3.0, beta: float = 1.0,
        score_thresh: float = 0.05, nms_thresh: float = 0.5, topk_candidates: int = 400,
        detections_per_img: int = 100) -> SSD:
    """SSD: the backbone's stride 4/8/16 maps and two extra maps (16x16 down to 1x1 on a 64 px
    scene), default boxes of scales 0.25-0.9, softmax classes, 3:1 hard negatives."""
    return SSD(num_classes, in_chans, backbone, backbone_kwargs, tuple(strides), tuple(extra_chs),
               tuple(tuple(r) for r in aspect_ratios), min_ratio, max_ratio, iou_thresh, neg_pos_ratio, beta,
               score_thresh, nms_thresh, topk_candidates, detections_per_img)


__all__ = ["DEFAULT_ASPECT_RATIOS", "SSD", "ExtraLayers", "SSDHead", "ssd", "ssd_loss", "ssd_match"]
