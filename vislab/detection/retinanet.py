"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection"): a one-stage detector.

A registry classifier is the backbone (:class:`~vislab.models.segmentation.BackboneFeatures`
reads the stages that ``feature_info`` names); an FPN neck turns the stages of strides
``strides`` into maps of ``fpn_chs`` channels (lateral 1x1 convs, top-down nearest upsampling
and addition, 3x3 smoothing; a stride beyond the backbone's deepest stage is an extra 3x3/2 conv,
as RetinaNet's P6/P7); two subnets shared across levels but not with each other score every
anchor for every class (a sigmoid per class, no background class) and regress its box deltas.

Training (the model returns ``{"loss", "cls", "box"}``): anchors (:class:`AnchorGenerator`, three
sizes an octave apart in thirds per level, three aspect ratios) are matched to the ground truth by
IoU (:class:`Matcher`: >= 0.5 positive, < 0.4 background, between ignored; every object keeps its
best anchors); the classification term is the focal loss (alpha 0.25, gamma 2) summed over the
anchors that are not ignored and divided by the number of positive anchors of the batch (at
least 1); the box term is smooth L1 (or L1) on the :class:`BoxCoder` deltas of the positive
anchors only, divided by the same number.  ``cls_loss='bce'`` (plain binary cross-entropy) and
``'bce_hard_negatives'`` (BCE over the positives and the ``neg_pos_ratio`` x as many negatives
of highest loss, SSD's mining) are the ablation the notes argue for.

Inference (eval mode returns ``[dict(boxes, scores, labels)]`` per image, as torchvision's
detectors): per level the ``topk_candidates`` best (anchor, class) scores above
``score_thresh``, decoded and clipped to the image, then class-wise NMS at ``nms_thresh`` over
all levels and the ``detections_per_img`` best.  The whole follows torchvision's
``models/detection/retinanet.py``, whose anchors and box coding the tests compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.detection.anchors import AnchorGenerator
from vislab.detection.boxes import box_iou, clip_boxes_to_image
from vislab.detection.coder import BoxCoder
from vislab.detection.losses import sigmoid_focal_loss
from vislab.detection.matcher import Matcher, matched_targets
from vislab.detection.nms import batched_nms
from vislab.detection.sampling import hard_negative_mask
from vislab.errors import UserError
from vislab.models.registry import register_model
from vislab.models.segmentation import BackboneFeatures

CLS_LOSSES = ("focal", "bce", "bce_hard_negatives")
BOX_LOSSES = ("smooth_l1", "l1")


# --------------------------------------------------------------------------- neck and head

class FPN(nn.Module):
    """Feature pyramid (Lin et al. 2017): ``P_i = smooth_i(lateral_i(C_i) + up(P_{i+1}))``.

    Args:
        in_chs: channels of the backbone maps, finest first.
        out_chs: channels of every pyramid level.
        extra_levels: levels added after the last one, each a 3x3 stride-2 conv of the previous
            level (a ReLU before all but the first, as RetinaNet's P7).
    """

    def __init__(self, in_chs: Sequence[int], out_chs: int, extra_levels: int = 0) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_chs, 1) for c in in_chs)
        self.smooth = nn.ModuleList(nn.Conv2d(out_chs, out_chs, 3, padding=1) for _ in in_chs)
        self.extra = nn.ModuleList(nn.Conv2d(out_chs, out_chs, 3, stride=2, padding=1) for _ in range(extra_levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:   # [(B, C_i, H_i, W_i)] -> [(B, F, H_i, W_i)]
        last = self.lateral[-1](feats[-1])
        out = [self.smooth[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral[i](feats[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            out.insert(0, self.smooth[i](last))
        for j, conv in enumerate(self.extra):
            out.append(conv(out[-1] if j == 0 else F.relu(out[-1])))
        return out


def _subnet(chs: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(chs, chs, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class RetinaNetHead(nn.Module):
    """The classification and box subnets, each ``num_convs`` 3x3 conv + ReLU then a 3x3 conv
    to ``A * K`` logits or ``A * 4`` deltas; shared by every level, separate from each other.

    Args:
        in_chs: channels of the pyramid levels.
        num_anchors: anchors per position ``A``.
        num_classes: classes ``K`` (no background class).
        num_convs: conv + ReLU layers of each subnet (4 in the paper).
        prior_prob: initial probability of every class at every anchor.
    """

    def __init__(self, in_chs: int, num_anchors: int, num_classes: int, num_convs: int = 4,
                 prior_prob: float = 0.01) -> None:
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.cls_subnet = _subnet(in_chs, num_convs)
        self.cls_logits = nn.Conv2d(in_chs, num_anchors * num_classes, 3, padding=1)
        self.box_subnet = _subnet(in_chs, num_convs)
        self.box_deltas = nn.Conv2d(in_chs, num_anchors * 4, 3, padding=1)
        self.init_weights(prior_prob)

    def init_weights(self, prior_prob: float = 0.01) -> None:
        """Gaussian weights (std 0.01), zero biases; the class logits' bias makes every
        sigmoid start at ``prior_prob``, so the ~all-background anchors do not swamp the first
        steps with a huge loss: ``b = -log((1 - p) / p)`` (the paper's section 4.1)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def _flatten(x: Tensor, n: int) -> Tensor:   # (B, A*n, H, W) -> (B, H*W*A, n)
        b, _, h, w = x.shape
        return x.reshape(b, -1, n, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, n)

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Logits ``(B, sum H*W*A, K)`` and deltas ``(B, sum H*W*A, 4)``, in the anchors' order."""
        cls = [self._flatten(self.cls_logits(self.cls_subnet(f)), self.num_classes) for f in feats]
        box = [self._flatten(self.box_deltas(self.box_subnet(f)), 4) for f in feats]
        return torch.cat(cls, 1), torch.cat(box, 1)


# --------------------------------------------------------------------------- loss

def match_anchors(anchors: Tensor, targets: Sequence[dict[str, Tensor]], matcher: Matcher) -> Tensor:
    """Per image, the index of each anchor's ground truth or a negative :class:`Matcher` label:
    ``Tensor[B, A]`` int64 for anchors ``Tensor[A, 4]``."""
    return torch.stack([matcher(box_iou(t["boxes"].to(anchors), anchors)) for t in targets])


def retinanet_loss(cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor, targets: Sequence[dict[str, Tensor]],
                   matcher: Matcher, coder: BoxCoder, cls_loss: str = "focal", alpha: float = 0.25,
                   gamma: float = 2.0, box_loss: str = "smooth_l1", beta: float = 0.1,
                   neg_pos_ratio: float = 3.0) -> dict[str, Tensor]:
    """RetinaNet's loss of a batch.

    Args:
        cls_logits: ``Tensor[B, A, K]``; box_deltas: ``Tensor[B, A, 4]``; anchors: ``Tensor[A, 4]``.
        targets: per image ``boxes`` ``Tensor[N, 4]`` (pixels, xyxy) and ``labels`` ``Tensor[N]``.
        cls_loss: ``focal``, ``bce`` or ``bce_hard_negatives`` (see the module docstring).
        box_loss: ``smooth_l1`` (switching at ``beta``) or ``l1``.

    Returns ``{"loss": cls + box, "cls": ..., "box": ...}``; both terms are sums divided by the
    number of positive anchors in the batch (at least 1).  Computed in float32 (autocast safe).
    """
    cls_logits, box_deltas, anchors = cls_logits.float(), box_deltas.float(), anchors.float()
    matched = match_anchors(anchors, targets, matcher)                         # (B, A)
    positive = matched >= 0
    valid = matched != Matcher.BETWEEN_THRESHOLDS
    num_pos = positive.sum().clamp(min=1)
    gt_labels, gt_boxes = matched_targets(targets, matched)                     # (B, A), (B, A, 4)
    onehot = F.one_hot(gt_labels, cls_logits.shape[-1]).to(cls_logits.dtype) * positive[..., None]
    if cls_loss == "focal":
        per_anchor = sigmoid_focal_loss(cls_logits, onehot, alpha, gamma).sum(-1)        # (B, A)
    else:
        per_anchor = F.binary_cross_entropy_with_logits(cls_logits, onehot, reduction="none").sum(-1)
    keep = valid
    if cls_loss == "bce_hard_negatives":         # ignored anchors rank last and are never kept
        ranked = per_anchor.detach().masked_fill(~valid, -math.inf)
        keep = hard_negative_mask(ranked, positive, neg_pos_ratio) & valid
    cls = (per_anchor * keep).sum() / num_pos

    b, a = positive.nonzero(as_tuple=True)
    if len(b):
        target = coder.encode(gt_boxes[b, a], anchors[a])
        pred = box_deltas[b, a]
        box = (F.smooth_l1_loss(pred, target, beta=beta, reduction="sum") if box_loss == "smooth_l1"
               else F.l1_loss(pred, target, reduction="sum")) / num_pos
    else:
        box = box_deltas.sum() * 0
    return {"loss": cls + box, "cls": cls, "box": box}


# --------------------------------------------------------------------------- the detector

class RetinaNet(nn.Module):
    """Backbone + FPN + head; see the module docstring.

    Args:
        num_classes / in_chans: object classes (no background) and input channels.
        backbone / backbone_kwargs: a registry classifier with ``feature_info`` and its arguments.
        strides: the pyramid levels' strides; each is the backbone's (last) stage of that stride,
            or, beyond its deepest one, an extra level (each twice the previous).
        fpn_chs / num_convs: channels of the pyramid and the subnets; conv layers per subnet.
        anchor_sizes: per level, the smallest anchor size in pixels; ``scales_per_octave``
            sizes ``s * 2 ** (i / scales_per_octave)`` per level, times ``aspect_ratios``
            (height / width).
        prior_prob: initial class probability (the bias init).
        cls_loss / alpha / gamma / neg_pos_ratio / box_loss / beta: see :func:`retinanet_loss`.
        fg_iou / bg_iou: the matcher's thresholds.
        score_thresh / nms_thresh / topk_candidates / detections_per_img: inference.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, strides: Sequence[int] = (4, 8, 16), fpn_chs: int = 256,
                 num_convs: int = 4, anchor_sizes: Sequence[float] = (12, 24, 48), scales_per_octave: int = 3,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), prior_prob: float = 0.01,
                 cls_loss: str = "focal", alpha: float = 0.25, gamma: float = 2.0, neg_pos_ratio: float = 3.0,
                 box_loss: str = "smooth_l1", beta: float = 0.1, fg_iou: float = 0.5, bg_iou: float = 0.4,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, topk_candidates: int = 1000,
                 detections_per_img: int = 100) -> None:
        super().__init__()
        if cls_loss not in CLS_LOSSES:
            raise UserError(f"model.kwargs.cls_loss is {cls_loss!r}; use one of {', '.join(CLS_LOSSES)}")
        if box_loss not in BOX_LOSSES:
            raise UserError(f"model.kwargs.box_loss is {box_loss!r}; use one of {', '.join(BOX_LOSSES)}")
        if len(anchor_sizes) != len(strides):
            raise UserError(f"{len(strides)} strides but {len(anchor_sizes)} anchor_sizes: give one anchor size per level")
        if not 0 < prior_prob < 1:
            raise UserError(f"model.kwargs.prior_prob must lie in (0, 1), got {prior_prob}")
        self.num_classes = num_classes
        self.backbone = BackboneFeatures(backbone, in_chans, **(backbone_kwargs or {}))
        red = self.backbone.reductions
        self.stage_ids, extra = [], 0
        for s in strides:
            if s in red:
                if extra:
                    raise UserError(f"strides {list(strides)}: a backbone stride after an extra level")
                self.stage_ids.append(max(i for i, r in enumerate(red) if r == s))
            elif self.stage_ids and s == 2 ** (extra + 1) * red[self.stage_ids[-1]]:
                extra += 1
            else:
                raise UserError(f"stride {s} is not one of {backbone}'s stages {sorted(set(red))} nor a doubling "
                                "beyond the last chosen one: choose model.kwargs.strides among them")
        self.strides = list(strides)
        self.neck = FPN([self.backbone.channels[i] for i in self.stage_ids], fpn_chs, extra)
        sizes = [tuple(s * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)) for s in anchor_sizes]
        self.anchor_generator = AnchorGenerator(sizes, (tuple(aspect_ratios),))
        num_anchors = self.anchor_generator.num_anchors_per_location()[0]
        self.head = RetinaNetHead(fpn_chs, num_anchors, num_classes, num_convs, prior_prob)
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality_matches=True)
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.loss_kwargs = {"cls_loss": cls_loss, "alpha": alpha, "gamma": gamma, "box_loss": box_loss,
                            "beta": beta, "neg_pos_ratio": neg_pos_ratio}
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_candidates, self.detections_per_img = topk_candidates, detections_per_img

    def features(self, images: Tensor) -> list[Tensor]:
        """The pyramid levels ``[(B, fpn_chs, H / s, W / s)]``, finest first."""
        stages = self.backbone(images)
        return self.neck([stages[i] for i in self.stage_ids])

    def anchors(self, images: Tensor, feats: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
        """The anchors ``Tensor[A, 4]`` (float32 whatever the autocast) and their count per level."""
        h, w = images.shape[-2:]
        grids = [tuple(f.shape[-2:]) for f in feats]
        per_level = self.anchor_generator.grid_anchors(grids, [(h // gh, w // gw) for gh, gw in grids])
        return torch.cat(per_level).float(), [len(a) for a in per_level]

    def forward(self, images: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: the loss dict (``targets`` required); eval: detections per image."""
        feats = self.features(images)
        cls, box = self.head(feats)
        anchors, per_level = self.anchors(images, feats)
        if self.training:
            if targets is None:
                raise ValueError("RetinaNet in training mode needs targets (a dict of boxes and labels per image)")
            return retinanet_loss(cls, box, anchors, targets, self.matcher, self.coder, **self.loss_kwargs)
        return self.postprocess(cls, box, anchors, per_level, tuple(images.shape[-2:]))

    @torch.no_grad()
    def postprocess(self, cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor, per_level: Sequence[int],
                    image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """torchvision's ``RetinaNet.postprocess_detections``: per level the ``topk_candidates``
        best scores above ``score_thresh``, decoded and clipped; class-wise NMS; the
        ``detections_per_img`` best, by decreasing score."""
        num_classes = cls_logits.shape[-1]
        out = []
        for logits, deltas in zip(cls_logits.float(), box_deltas.float()):
            boxes_all, scores_all, labels_all = [], [], []
            for lg, dl, an in zip(logits.split(list(per_level)), deltas.split(list(per_level)),
                                  anchors.split(list(per_level))):
                scores = torch.sigmoid(lg).flatten()
                keep = scores > self.score_thresh
                scores, idx = scores[keep], keep.nonzero().flatten()
                scores, top = scores.topk(min(self.topk_candidates, len(idx)))
                idx = idx[top]
                a, labels = idx // num_classes, idx % num_classes
                boxes_all.append(clip_boxes_to_image(self.coder.decode(dl[a], an[a]), image_size))
                scores_all.append(scores)
                labels_all.append(labels)
            boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[:self.detections_per_img]
            out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return out


@register_model(kind="detection")
def retinanet(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
              backbone_kwargs: dict | None = None, strides: tuple[int, ...] = (4, 8, 16), fpn_chs: int = 256,
              num_convs: int = 4, anchor_sizes: tuple[float, ...] = (12, 24, 48), scales_per_octave: int = 3,
              aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0), prior_prob: float = 0.01,
              cls_loss: str = "focal", alpha: float = 0.25, gamma: float = 2.0, neg_pos_ratio: float = 3.0,
              box_loss: str = "smooth_l1", beta: float = 0.1, fg_iou: float = 0.5, bg_iou: float = 0.4,
              score_thresh: float = 0.05, nms_thresh: float = 0.5, topk_candidates: int = 1000,
              detections_per_img: int = 100) -> RetinaNet:
    """RetinaNet with focal loss: FPN levels of strides 4/8/16 (sized for 64-96 px scenes),
    9 anchors per position, sigmoid classes; ``cls_loss`` bce / bce_hard_negatives for the ablation."""
    return RetinaNet(num_classes, in_chans, backbone, backbone_kwargs, tuple(strides), fpn_chs, num_convs,
                     tuple(anchor_sizes), scales_per_octave, tuple(aspect_ratios), prior_prob, cls_loss, alpha,
                     gamma, neg_pos_ratio, box_loss, beta, fg_iou, bg_iou, score_thresh, nms_thresh,
                     topk_candidates, detections_per_img)


__all__ = ["BOX_LOSSES", "CLS_LOSSES", "FPN", "RetinaNet", "RetinaNetHead", "match_anchors", "retinanet",
           "retinanet_loss"]
