"""The Region Proposal Network of Faster R-CNN (Ren et al. 2015): proposals learned from the features.

A small network slides over the feature map(s): a 3x3 conv + ReLU, then two sibling 1x1 convs
giving, for each of the ``A`` anchors of every position, one objectness logit (object vs
background; the paper's two-way softmax, here one sigmoid, as torchvision and Detectron) and four
box deltas relative to the anchor (:class:`RPNHead`, shared by every pyramid level).

Training (:meth:`RegionProposalNetwork.loss`): each anchor is matched to the ground truth by IoU
(:class:`~vislab.detection.matcher.Matcher`): positive at IoU >= 0.7, negative below 0.3,
ignored between, and every object keeps the anchors that overlap it most even below 0.7 (the
paper's second positive rule, ``allow_low_quality_matches``).  Per image a minibatch of
``batch_size_per_image`` anchors is drawn, at most ``positive_fraction`` of them positive
(:func:`~vislab.detection.sampling.sample_balanced`; the paper's 256 anchors, up to 1:1).
The objectness term is the binary cross-entropy averaged over the sampled anchors; the box term
is the smooth L1 (``beta = 1/9``, torchvision's) of the :class:`BoxCoder` deltas of the sampled
positives, summed and divided by the number of sampled anchors (the paper's ``1 / N_reg``
weighting with ``lambda`` folded in, as torchvision does).

Proposal layer (:meth:`RegionProposalNetwork.filter_proposals`): per level the
``pre_nms_top_n`` anchors of highest objectness, decoded, clipped to the image, boxes narrower
than ``min_size`` and scores below ``score_thresh`` dropped, NMS at ``nms_thresh`` within each
level, and the ``post_nms_top_n`` best over all levels.  The proposals are computed from detached
deltas, so no gradient flows from the second stage into the RPN's regression: the paper's
"approximate joint training".

The whole is torchvision's ``models/detection/rpn.py``, on vislab's anchors, box coder, matcher,
sampler and NMS; the tests compare proposals and losses with torchvision's RPN given the same
weights.  One deviation: an object that overlaps no anchor at all gets none (vislab's
:class:`Matcher`), where torchvision's low-quality rule would mark every anchor at IoU 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.detection.anchors import AnchorGenerator
from vislab.detection.boxes import box_iou, clip_boxes_to_image, remove_small_boxes
from vislab.detection.coder import BoxCoder
from vislab.detection.matcher import Matcher
from vislab.detection.nms import batched_nms
from vislab.detection.sampling import sample_balanced


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then per anchor a 1x1 objectness logit and 1x1 box deltas; shared by
    every feature level.

    Args:
        in_chs: channels of the feature map(s).
        num_anchors: anchors per position ``A``.
    """

    def __init__(self, in_chs: int, num_anchors: int) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.conv = nn.Conv2d(in_chs, in_chs, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_chs, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_chs, num_anchors * 4, 1)
        self.init_weights()

    def init_weights(self) -> None:
        """Gaussian weights of std 0.01 and zero biases (the paper's section 3.1.3)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Objectness ``(B, sum H*W*A)`` and deltas ``(B, sum H*W*A, 4)``, in the anchors' order
        (level, then row, column, anchor)."""
        logits, deltas = [], []
        for f in feats:                                                   # (B, C, H, W)
            t = F.relu(self.conv(f))
            b, _, h, w = f.shape
            logits.append(self.cls_logits(t).permute(0, 2, 3, 1).reshape(b, -1))                       # (B, H*W*A)
            deltas.append(self.bbox_pred(t).view(b, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4))
        return torch.cat(logits, 1), torch.cat(deltas, 1)


class RegionProposalNetwork(nn.Module):
    """Anchors + :class:`RPNHead` + matching, sampling and loss + the proposal layer; see the
    module docstring.

    Args:
        anchor_generator: the anchors of every level (one size per level with a pyramid,
            several on a single map).
        head: an :class:`RPNHead` (or anything returning its outputs).
        fg_iou / bg_iou: anchors positive at IoU >= ``fg_iou``, negative below ``bg_iou``.
        batch_size_per_image / positive_fraction: the sampled minibatch of anchors per image.
        pre_nms_top_n / post_nms_top_n: ``{"training": n, "testing": m}``: proposals kept per
            level before NMS, and per image after it.
        nms_thresh: IoU of the NMS within a level.
        min_size: proposals narrower or lower than this (pixels) are dropped.
        score_thresh: proposals of objectness probability below this are dropped.

    ``forward(images, features, targets=None) -> (proposals, losses)``: ``proposals`` a
    ``Tensor[K_i, 4]`` per image (pixels, xyxy, by decreasing objectness, no gradient);
    ``losses`` ``{"rpn_objectness", "rpn_box"}`` in training, empty in eval.
    """

    def __init__(self, anchor_generator: AnchorGenerator, head: nn.Module, fg_iou: float = 0.7,
                 bg_iou: float = 0.3, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: Mapping[str, int] | None = None, post_nms_top_n: Mapping[str, int] | None = None,
                 nms_thresh: float = 0.7, min_size: float = 1e-3, score_thresh: float = 0.0) -> None:
        super().__init__()
        self.anchor_generator, self.head = anchor_generator, head
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality_matches=True)
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self._pre_nms_top_n = dict(pre_nms_top_n or {"training": 2000, "testing": 1000})
        self._post_nms_top_n = dict(post_nms_top_n or {"training": 2000, "testing": 1000})
        for name, d in (("pre_nms_top_n", self._pre_nms_top_n), ("post_nms_top_n", self._post_nms_top_n)):
            if set(d) != {"training", "testing"}:
                raise ValueError(f"{name} must be a dict with keys 'training' and 'testing', got {d}")
        self.nms_thresh, self.min_size, self.score_thresh = nms_thresh, min_size, score_thresh

    @property
    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    @property
    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def anchors(self, images: Tensor, features: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
        """The anchors ``Tensor[A, 4]`` (float32) shared by the batch, and their count per level."""
        h, w = images.shape[-2:]
        grids = [tuple(f.shape[-2:]) for f in features]
        per_level = self.anchor_generator.grid_anchors(grids, [(h // gh, w // gw) for gh, gw in grids])
        return torch.cat(per_level).float(), [len(a) for a in per_level]

    @torch.no_grad()
    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_size: tuple[int, int],
                         per_level: Sequence[int]) -> list[Tensor]:
        """The proposal layer: ``proposals`` ``(B, A, 4)`` decoded anchors and their logits
        ``(B, A)`` -> a ``Tensor[K_i, 4]`` per image (see the module docstring)."""
        levels = torch.cat([torch.full((n,), i, dtype=torch.int64, device=proposals.device)
                            for i, n in enumerate(per_level)])
        top, start = [], 0                                   # per level, the best pre_nms_top_n
        for ob in objectness.split(list(per_level), 1):
            top.append(ob.topk(min(self.pre_nms_top_n, ob.shape[1]), dim=1).indices + start)
            start += ob.shape[1]
        top = torch.cat(top, 1)                                                       # (B, T)
        batch = torch.arange(len(proposals), device=proposals.device)[:, None]
        boxes_all, scores_all, levels = proposals[batch, top], torch.sigmoid(objectness[batch, top]), levels[top]
        out = []
        for boxes, scores, lvl in zip(boxes_all, scores_all, levels):
            boxes = clip_boxes_to_image(boxes, image_size)
            keep = remove_small_boxes(boxes, self.min_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh)[:self.post_nms_top_n]
            out.append(boxes[keep])
        return out

    def loss(self, objectness: Tensor, deltas: Tensor, anchors: Tensor, targets: Sequence[Mapping[str, Tensor]]
             ) -> dict[str, Tensor]:
        """``{"rpn_objectness", "rpn_box"}`` for logits ``(B, A)`` and deltas ``(B, A, 4)`` of
        ``anchors`` ``Tensor[A, 4]``; targets need only ``boxes``."""
        labels, gt_boxes = [], []
        for t in targets:
            gt = t["boxes"].to(anchors)
            matched = self.matcher(box_iou(gt, anchors))
            lab = (matched >= 0).float()
            lab[matched == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(lab)
            gt_boxes.append(gt[matched.clamp(min=0)] if len(gt) else torch.zeros_like(anchors))
        pos, neg = sample_balanced(labels, self.batch_size_per_image, self.positive_fraction)
        pos, neg = torch.stack(pos), torch.stack(neg)                                   # (B, A)
        sampled = pos | neg
        labels, gt_boxes = torch.stack(labels), torch.stack(gt_boxes)
        objectness_loss = F.binary_cross_entropy_with_logits(objectness[sampled].float(), labels[sampled])
        b, a = pos.nonzero(as_tuple=True)
        target = self.coder.encode(gt_boxes[b, a], anchors[a])
        box_loss = F.smooth_l1_loss(deltas[b, a].float(), target, beta=1 / 9, reduction="sum") / sampled.sum().clamp(min=1)
        return {"rpn_objectness": objectness_loss, "rpn_box": box_loss}

    def forward(self, images: Tensor, features: Sequence[Tensor],
                targets: Sequence[Mapping[str, Tensor]] | None = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        objectness, deltas = self.head(features)                  # (B, A), (B, A, 4)
        anchors, per_level = self.anchors(images, features)
        decoded = self.coder.decode(deltas.detach().float().reshape(-1, 4), anchors.repeat(len(images), 1))
        proposals = self.filter_proposals(decoded.view(len(images), -1, 4), objectness.detach().float(),
                                          tuple(images.shape[-2:]), per_level)
        if not self.training:
            return proposals, {}
        if targets is None:
            raise ValueError("the RPN in training mode needs targets (a dict with boxes per image)")
        return proposals, self.loss(objectness, deltas, anchors, targets)


__all__ = ["RPNHead", "RegionProposalNetwork"]
