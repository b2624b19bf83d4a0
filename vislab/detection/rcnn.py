"""R-CNN (Girshick et al. 2014, "Rich feature hierarchies for accurate object detection and
semantic segmentation"): a CNN run on every warped region proposal.  Slow by design: the
baseline that Fast and Faster R-CNN remove the waste from.

The paper's pipeline, and what it is here:

1. **Proposals**: ~2,000 per image by selective search, fast mode
   (:class:`~vislab.detection.proposals.SelectiveSearch`; here up to ``max_proposals`` = 300 on
   the 64x64 scenes).  In training the boxes of each scene are cached, as the paper caches
   everything on disk; in eval mode they are searched again, so inference times include it.
2. **Warping**: each proposal's box is dilated so that, once warped, it has ``p`` pixels of
   context on every side, then warped anisotropically (each axis on its own) to the CNN's input
   size; pixels beyond the image take the image mean.  The paper: 227 x 227 with ``p`` = 16;
   here ``warp_size`` = 32 and ``context_pad`` = 2 (the same ~7 % margin) -- the objects are
   11-42 px, so 32 px keeps their detail.  :func:`warp_regions` is a bilinear RoIAlign of the
   dilated box on the zero-padded normalised image (zero is the mean there).
3. **Features**: the CNN is a registry classifier (:class:`BackboneFeatures`); the last stage,
   global-average-pooled, is the feature vector (the paper's fc7, 4096-d; here the backbone's
   last width).
4. **Fine-tuning**: the CNN with a ``K + 1``-way softmax (background 0) on warped proposals,
   by cross-entropy.  Per minibatch (the paper: 128 windows of which 32 foreground): a proposal
   (or ground-truth box) whose best IoU with a ground truth is >= 0.5 takes that object's class,
   the rest are background; ``rois_per_batch`` are drawn from all images of the batch together,
   at most ``fg_fraction`` of them foreground (:func:`sample_balanced`).
5. **Per-class linear SVMs** on the fc7 features: positives are the ground-truth boxes only,
   negatives the proposals whose IoU with every box of that class is < 0.3 (between: left out),
   with hard-negative mining.  The paper trains them after fine-tuning, with liblinear on
   features cached on disk, mining negatives above a margin of -1.  Here they are trained in the
   same run, by the same optimiser, on the *detached* features of each minibatch (the SVMs do not
   change the CNN): the primal objective ``mean hinge + l2 / 2 * ||W||^2`` (:func:`linear_svm_loss`,
   the minimiser of LinearSVC's ``||w||^2 / 2 + C * sum hinge`` for ``C = 1 / (l2 * n)``), where
   per class only the ``neg_pos_ratio`` x #positives negatives of highest score (the hardest;
   only those inside the margin add any loss) enter the hinge (:func:`hard_negative_mask`).
6. **Box regression**: a class-specific linear map from pool5 features to the :class:`BoxCoder`
   deltas (weights 10, 10, 5, 5) of the matched ground truth, for the windows of IoU >= 0.6,
   ridge-regularised (the paper: lambda = 1000 on pool5, with least squares).  Here pool5 is the
   penultimate stage's map average-pooled to 2 x 2 (a 2 x 2 map on 32 px crops), detached.

Training returns ``{"loss": finetune + svm + bbox, "finetune", "svm", "bbox"}``.  Inference
(eval mode returns ``[dict(boxes, scores, labels)]``): every proposal warped and scored by the
SVMs; the score is ``sigmoid(margin)``, so that the order (all COCO AP needs) is the SVM's and
0.5 is the SVM's decision boundary (``score_thresh`` 0.05 is a margin of -2.9: the negatives the
SVM is sure of are dropped); each class's regression applied, boxes clipped; class-wise NMS at
0.3 (the paper's); the ``detections_per_img`` best.  ``classifier='softmax'`` scores with the
fine-tuned softmax instead (the paper's appendix B ablation: the SVMs did better there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.detection.boxes import box_iou, clip_boxes_to_image
from vislab.detection.coder import BoxCoder
from vislab.detection.nms import filter_detections
from vislab.detection.proposals import MODES, SelectiveSearch
from vislab.detection.roi import convert_boxes_to_rois, roi_align
from vislab.detection.sampling import hard_negative_mask, sample_balanced
from vislab.errors import UserError
from vislab.models.registry import register_model
from vislab.models.segmentation import BackboneFeatures

CLASSIFIERS = ("svm", "softmax")
CHUNK = 4096                  # warped regions per CNN pass at inference (memory: ~50 MB of crops)


def warp_regions(images: Tensor, boxes: Tensor | Sequence[Tensor], size: int, context_pad: int = 0) -> Tensor:
    """R-CNN's warp: each box, dilated so that ``context_pad`` of the ``size`` output pixels on
    every side are context, bilinearly resampled to ``size x size`` (anisotropic).

    Args:
        images: ``Tensor[B, C, H, W]``, normalised (the padding beyond the image is 0, their mean).
        boxes: ``Tensor[K, 5]`` rows of ``(image index, x1, y1, x2, y2)`` or one ``Tensor[L_i, 4]``
            per image, in pixels.
        size: output side; context_pad: output pixels of context on each side.

    Returns ``Tensor[K, C, size, size]``.  The dilated box of ``w x h`` pixels is ``w * size /
    (size - 2 p)`` wide (and as high), on the same centre; it is sampled with RoIAlign
    (``aligned=True``, adaptive sampling: one bilinear sample per output pixel when enlarging,
    their mean over the covered pixels when shrinking) from the image zero-padded beyond its border.
    """
    if not 0 <= 2 * context_pad < size:
        raise ValueError(f"context_pad {context_pad} must be >= 0 and leave room in the {size} px warp")
    rois = convert_boxes_to_rois(boxes).to(images.device, torch.float32)
    scale = size / (size - 2 * context_pad)
    centre = (rois[:, 1:3] + rois[:, 3:5]) / 2
    half = (rois[:, 3:5] - rois[:, 1:3]) * scale / 2
    dilated = torch.cat((centre - half, centre + half), 1)                       # (K, 4)
    h, w = images.shape[-2:]
    over = torch.cat((-dilated[:, :2], dilated[:, 2:] - dilated.new_tensor([w, h])), 1)
    pad = math.ceil(max(float(over.max()), 0.0)) + 1 if len(rois) else 0       # 1 more: the bilinear border
    padded = F.pad(images, (pad, pad, pad, pad))
    return roi_align(padded, torch.cat((rois[:, :1], dilated + pad), 1).to(images.dtype), size,
                     sampling_ratio=-1, aligned=True)


def linear_svm_loss(scores: Tensor, targets: Tensor, weight: Tensor, l2: float) -> Tensor:
    """The primal objective of linear SVMs, one per column, averaged over the examples that count.

    Args:
        scores: ``Tensor[N, K]`` margins ``w_k . x + b_k``.
        targets: ``Tensor[N, K]``: +1 positive, -1 negative, 0 left out.
        weight: ``Tensor[K, D]`` the SVMs' weights (the bias is not regularised).
        l2: the regularisation: ``l2 / 2 * ||weight||^2``.

    Returns ``sum(max(0, 1 - t * s)) / #(t != 0) + l2 / 2 * ||weight||^2``.  For one class and
    ``n`` examples that is LinearSVC's ``||w||^2 / 2 + C * sum hinge`` over ``C * n`` with
    ``C = 1 / (l2 * n)``: the same minimiser.
    """
    used = targets != 0
    hinge = (1 - targets * scores).clamp(min=0) * used
    return hinge.sum() / used.sum().clamp(min=1) + 0.5 * l2 * weight.pow(2).sum()


class RCNN(nn.Module):
    """R-CNN; see the module docstring.

    Args:
        num_classes / in_chans: object classes (no background) and input channels.
        backbone / backbone_kwargs: a registry classifier with ``feature_info`` and its arguments.
        proposal_mode / max_proposals: selective search's mode and the boxes kept per image.
        warp_size / context_pad: the CNN's input side and the context pixels on each side.
        rois_per_batch / fg_fraction / fg_iou: the fine-tuning minibatch: windows per batch (all
            images together), their largest foreground fraction, the foreground IoU.
        svm_neg_iou / neg_pos_ratio / svm_l2: the SVMs' negatives (IoU below, with every box of the
            class), hard negatives kept per positive, and their L2 weight.
        bbox_iou / bbox_l2: the windows the box regression learns from (IoU at least), its L2 weight.
        classifier: ``svm`` (the paper) or ``softmax`` (the fine-tuned classifier) scores detections.
        box_regression: apply the box regression at inference.
        score_thresh / nms_thresh / detections_per_img: inference.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, proposal_mode: str = "fast", max_proposals: int = 300,
                 warp_size: int = 32, context_pad: int = 2, rois_per_batch: int = 128, fg_fraction: float = 0.25,
                 fg_iou: float = 0.5, svm_neg_iou: float = 0.3, neg_pos_ratio: float = 3.0, svm_l2: float = 1e-3,
                 bbox_iou: float = 0.6, bbox_l2: float = 1e-3, classifier: str = "svm", box_regression: bool = True,
                 score_thresh: float = 0.05, nms_thresh: float = 0.3, detections_per_img: int = 100) -> None:
        super().__init__()
        if proposal_mode not in MODES:
            raise UserError(f"model.kwargs.proposal_mode is {proposal_mode!r}; use one of {', '.join(MODES)}")
        if classifier not in CLASSIFIERS:
            raise UserError(f"model.kwargs.classifier is {classifier!r}; use one of {', '.join(CLASSIFIERS)}")
        if not 0 <= 2 * context_pad < warp_size:
            raise UserError(f"model.kwargs.context_pad {context_pad} must be >= 0 and below half of warp_size {warp_size}")
        if not 0 < fg_fraction <= 1 or rois_per_batch < 1 or max_proposals < 1:
            raise UserError("model.kwargs: need 0 < fg_fraction <= 1, rois_per_batch >= 1 and max_proposals >= 1")
        self.num_classes = num_classes
        self.backbone = BackboneFeatures(backbone, in_chans, stages=(-2, -1), **(backbone_kwargs or {}))
        feat_chs, pool5_chs = self.backbone.channels[1], self.backbone.channels[0] * 4
        self.classifier = nn.Linear(feat_chs, num_classes + 1)      # fine-tuning: background is 0
        self.svm = nn.Linear(feat_chs, num_classes)                 # one linear SVM per class
        self.bbox = nn.Linear(pool5_chs, num_classes * 4)           # class-specific box regression
        for m in (self.classifier, self.svm, self.bbox):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        self.proposer = SelectiveSearch(proposal_mode, max_proposals)   # no parameters, no state_dict
        self.coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.warp_size, self.context_pad = warp_size, context_pad
        self.rois_per_batch, self.fg_fraction, self.fg_iou = rois_per_batch, fg_fraction, fg_iou
        self.svm_neg_iou, self.neg_pos_ratio, self.svm_l2 = svm_neg_iou, neg_pos_ratio, svm_l2
        self.bbox_iou, self.bbox_l2 = bbox_iou, bbox_l2
        self.score_by_svm, self.box_regression = classifier == "svm", box_regression
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    def region_features(self, images: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """Warp ``rois`` ``Tensor[K, 5]`` and run the CNN: fc7 ``(K, D)`` and pool5 ``(K, 4 D')``."""
        crops = warp_regions(images, rois, self.warp_size, self.context_pad)     # (K, C, S, S)
        pool5, last = self.backbone(crops)
        return last.mean((2, 3)), F.adaptive_avg_pool2d(pool5, 2).flatten(1)

    def forward(self, images: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: the loss dict (``targets`` required); eval: detections per image."""
        if self.training:
            if targets is None:
                raise ValueError("R-CNN in training mode needs targets (a dict of boxes and labels per image)")
            return self.loss(images, self.proposer(images, use_cache=True), targets)
        return self.detect(images, self.proposer(images))

    # ----------------------------------------------------------------------- training

    def _label_windows(self, proposals: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """Every window of the batch (proposals, then ground truths, image by image) as RoIs
        ``Tensor[N, 5]``, its IoU with each class's boxes of its image ``Tensor[N, K]``, and its
        matched ground truth: class ``Tensor[N]`` (-1 when the image has none) and box ``(N, 4)``."""
        rois, class_iou, gt_label, gt_box = [], [], [], []
        for i, (props, t) in enumerate(zip(proposals, targets)):
            boxes, labels = t["boxes"].to(props), t["labels"].to(props.device)
            windows = torch.cat((props, boxes))
            iou = box_iou(boxes, windows)                                             # (G, P + G)
            per_class = windows.new_zeros(len(windows), self.num_classes)
            per_class.scatter_reduce_(1, labels[None].expand(len(windows), -1), iou.T, "amax")
            rois.append(F.pad(windows, (1, 0), value=float(i)))
            class_iou.append(per_class)
            if len(boxes):
                idx = iou.argmax(0)
                gt_label.append(labels[idx])
                gt_box.append(boxes[idx])
            else:
                gt_label.append(labels.new_full((len(windows),), -1))
                gt_box.append(windows)
        return torch.cat(rois), torch.cat(class_iou), torch.cat(gt_label), torch.cat(gt_box)

    def loss(self, images: Tensor, proposals: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]
             ) -> dict[str, Tensor]:
        """The three objectives on one batch; see the module docstring."""
        rois, class_iou, gt_label, gt_box = self._label_windows(proposals, targets)
        best_iou = class_iou.max(1).values
        finetune_label = torch.where(best_iou >= self.fg_iou, gt_label + 1, 0)
        pos, neg = sample_balanced([finetune_label], self.rois_per_batch, self.fg_fraction)
        sampled = torch.nonzero(pos[0] | neg[0]).flatten()
        counts = [len(p) for p in proposals]
        is_gt = torch.cat([torch.arange(n + len(t["boxes"]), device=rois.device) >= n
                           for n, t in zip(counts, targets)])
        gt_rows = torch.nonzero(is_gt).flatten()
        rows = torch.cat((sampled, gt_rows))               # the windows that go through the CNN
        fc7, pool5 = self.region_features(images, rois[rows])
        n = len(sampled)
        finetune = F.cross_entropy(self.classifier(fc7[:n]).float(), finetune_label[sampled])

        # SVMs: ground truths positive for their class; windows far from every box of a class negative
        scores = self.svm(fc7.detach().float())                                        # (R, K)
        svm_targets = torch.where(class_iou[rows] < self.svm_neg_iou, -1.0, 0.0)
        gt_classes = torch.cat([t["labels"] for t in targets]).to(rows.device)
        svm_targets[torch.arange(n, len(rows), device=rows.device), gt_classes] = 1.0
        ranked = scores.detach().masked_fill(svm_targets != -1, -math.inf).T           # (K, R)
        hard = hard_negative_mask(ranked, (svm_targets == 1).T, self.neg_pos_ratio).T
        svm = linear_svm_loss(scores, svm_targets * hard, self.svm.weight, self.svm_l2)

        # box regression: windows of IoU >= bbox_iou with their ground truth, own class's deltas
        reg = torch.nonzero(best_iou[rows] >= self.bbox_iou).flatten()
        deltas = self.bbox(pool5.detach().float()).view(len(rows), self.num_classes, 4)
        r = rows[reg]
        target = self.coder.encode(gt_box[r], rois[r, 1:])
        err = (deltas[reg, gt_label[r]] - target).pow(2).sum(1)
        bbox = err.sum() / max(len(reg), 1) + 0.5 * self.bbox_l2 * self.bbox.weight.pow(2).sum()
        return {"loss": finetune + svm + bbox, "finetune": finetune, "svm": svm, "bbox": bbox}

    # ----------------------------------------------------------------------- inference

    @torch.no_grad()
    def detect(self, images: Tensor, proposals: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """Score every proposal, regress, clip, class-wise NMS; see the module docstring."""
        rois = convert_boxes_to_rois(list(proposals)).to(images.device, torch.float32)
        scores, deltas = [], []
        for chunk in rois.split(CHUNK):
            fc7, pool5 = self.region_features(images, chunk)
            scores.append(torch.sigmoid(self.svm(fc7).float()) if self.score_by_svm
                          else F.softmax(self.classifier(fc7).float(), -1)[:, 1:])
            deltas.append(self.bbox(pool5).float().view(len(chunk), self.num_classes, 4))
        scores_all, deltas_all = torch.cat(scores), torch.cat(deltas)                  # (N, K), (N, K, 4)
        if self.box_regression:
            boxes_all = self.coder.decode(deltas_all, rois[:, 1:])
        else:
            boxes_all = rois[:, None, 1:].expand(-1, self.num_classes, -1)
        boxes_all = clip_boxes_to_image(boxes_all, tuple(images.shape[-2:]))
        labels_all = torch.arange(self.num_classes, device=rois.device).expand_as(scores_all)
        out = []
        for i in range(len(images)):
            mine = rois[:, 0] == i
            out.append(filter_detections(boxes_all[mine].reshape(-1, 4), scores_all[mine].flatten(),
                                         labels_all[mine].flatten(), self.score_thresh, self.nms_thresh,
                                         self.detections_per_img))
        return out


@register_model(kind="detection")
def rcnn(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18", backbone_kwargs: dict | None = None,
         proposal_mode: str = "fast", max_proposals: int = 300, warp_size: int = 32, context_pad: int = 2,
         rois_per_batch: int = 128, fg_fraction: float = 0.25, fg_iou: float = 0.5, svm_neg_iou: float = 0.3,
         neg_pos_ratio: float = 3.0, svm_l2: float = 1e-3, bbox_iou: float = 0.6, bbox_l2: float = 1e-3,
         classifier: str = "svm", box_regression: bool = True, score_thresh: float = 0.05, nms_thresh: float = 0.3,
         detections_per_img: int = 100) -> RCNN:
    """R-CNN: selective search (fast), 32 px warps with 2 px of context, a fine-tuned CNN, per-class
    linear SVMs with hard-negative mining and class-specific box regression; NMS 0.3."""
    return RCNN(num_classes, in_chans, backbone, backbone_kwargs, proposal_mode, max_proposals, warp_size,
                context_pad, rois_per_batch, fg_fraction, fg_iou, svm_neg_iou, neg_pos_ratio, svm_l2, bbox_iou,
                bbox_l2, classifier, box_regression, score_thresh, nms_thresh, detections_per_img)


__all__ = ["CLASSIFIERS", "RCNN", "linear_svm_loss", "rcnn", "warp_regions"]
