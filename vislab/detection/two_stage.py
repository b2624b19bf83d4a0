"""Two-stage detectors: Fast R-CNN, Faster R-CNN and Faster R-CNN with a feature pyramid.

The three share one shape (:class:`TwoStageDetector`): a registry classifier as the backbone
(:class:`~vislab.models.segmentation.BackboneFeatures`), run once on the whole image; optionally a
neck (vislab's :class:`~vislab.detection.retinanet.FPN`); a *proposer* giving a few hundred
candidate boxes per image; and the second stage, :class:`RoIHeads`, which pools a fixed-size
feature from every proposal, runs two fully connected layers and predicts, per proposal, a
softmax over the ``K`` classes plus background and one set of box deltas per class.

* **Fast R-CNN** (Girshick 2015, :class:`FastRCNN`): the proposals come from selective search
  (:class:`vislab.detection.proposals.SelectiveSearch`), computed once per training scene and
  cached; RoI max pooling (:func:`~vislab.detection.roi.roi_pool`, 7x7) on one backbone stage;
  the paper's RoI minibatch of 64 per image, 25% foreground (IoU >= 0.5), background IoU in
  [0.1, 0.5) (below 0.1 ignored: the paper's heuristic of a hard-ish background).
* **Faster R-CNN** (Ren et al. 2015, :class:`FasterRCNN`): a Region Proposal Network
  (:mod:`vislab.detection.rpn`) on the same map replaces selective search; the two stages are
  trained together with one loss, the proposals detached ("approximate joint training", the
  paper's section 3.2 alternative to its 4-step alternating training).
* **Faster R-CNN + FPN** (Lin et al. 2017, :class:`FasterRCNNFPN`): an FPN on the strides 4/8/16
  stages (P2-P4), the RPN on every level with one anchor size per level and three ratios, and
  each RoI pooled by RoIAlign (7x7, sampling ratio 2) from the level that
  :func:`~vislab.detection.roi.assign_fpn_levels` chooses for its size.

Scaled to vislab's scenes (64x64 pixels, objects 11-42 px) rather than the papers' 600-800 px
images:

* The single-level models read the stride-8 stage (an 8x8 map) where the papers read conv5 at
  stride 16: on a 64 px scene stride 16 leaves a 4x4 map, an anchor centre every 16 px and an
  11 px object less than one cell wide, so that RoI pooling would repeat one cell over all 7x7
  bins.  At stride 8 the objects cover 1.4-5 cells.
* Anchors are 12, 24 and 48 px (the papers' 128-512 on ~600 px images) times ratios 0.5, 1, 2:
  nine per position on the single map; on the pyramid one size per level, 12 on P2, 24 on P3,
  48 on P4 (the FPN paper's 32-512 on P2-P6 is 8 strides; here 3).  No P6: on a 64 px scene it
  would be a 2x2 map of 96 px anchors, larger than the scene.
* FPN level rule: ``k = floor(3 + log2(sqrt(wh) / 32))`` clamped to P2-P4, i.e. canonical size
  32 px at k0 = 3 (the stride-8 level), where the paper has 224 px at k0 = 4 (224 is ImageNet's
  size on ~800 px COCO images).  With it every RoI of 16 px or more covers 4-8 cells a side on
  its level (16-32 px on P2, 32-64 px on P3), so its 7x7 RoIAlign grid samples real detail; the
  image-fraction rule (canonical 224 * 64 / 800 = 18 px at k0 = 4) would send every object of
  18 px or more to the 4x4 P4 map, one to three cells wide.
* The RoI minibatch is 64 RoIs per image (torchvision's 512 is for ~100 proposals-worth of
  objects on COCO images; the scenes hold 1-4), the fc layers 256 wide (the papers' 4096 /
  torchvision's 1024), and far fewer proposals are kept (see the factories).

Class indices: inside :class:`RoIHeads` class 0 is the background and object class ``c`` of
vislab (``0..K-1``) is ``c + 1``, as in torchvision (so its weights and losses compare 1:1); the
detections returned carry vislab's labels ``0..K-1`` again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.detection.anchors import AnchorGenerator
from vislab.detection.boxes import box_iou, clip_boxes_to_image
from vislab.detection.coder import BoxCoder
from vislab.detection.matcher import Matcher
from vislab.detection.nms import filter_detections
from vislab.detection.retinanet import FPN
from vislab.detection.roi import multiscale_roi_align, roi_align, roi_pool
from vislab.detection.rpn import RegionProposalNetwork, RPNHead
from vislab.detection.sampling import sample_balanced
from vislab.errors import UserError
from vislab.models.registry import register_model
from vislab.models.segmentation import BackboneFeatures

Targets = Sequence[Mapping[str, Tensor]]
ROI_OPS = ("pool", "align")


# --------------------------------------------------------------------------- the second stage

class RoIPooler(nn.Module):
    """A fixed-size feature ``(R, C, S, S)`` for every proposal, from one map or a pyramid.

    Args:
        output_size: ``S``, bins per side.
        op: ``pool`` (Fast R-CNN's RoI max pooling, one map only) or ``align`` (RoIAlign).
        sampling_ratio: RoIAlign's samples per bin and side.
        canonical_size / canonical_level: the pyramid's level rule (:func:`assign_fpn_levels`'s
            ``canonical_size`` and ``k0``).

    Each map's stride is read from the image and map sizes, as torchvision's poolers do:
    ``2 ** round(log2(image height / map height))``.
    """

    def __init__(self, output_size: int = 7, op: str = "pool", sampling_ratio: int = 2,
                 canonical_size: float = 224, canonical_level: int = 4) -> None:
        super().__init__()
        if op not in ROI_OPS:
            raise UserError(f"RoI op {op!r}: use one of {', '.join(ROI_OPS)}")
        self.output_size, self.op, self.sampling_ratio = output_size, op, sampling_ratio
        self.canonical_size, self.canonical_level = canonical_size, canonical_level

    @staticmethod
    def strides(features: Sequence[Tensor], image_size: tuple[int, int]) -> list[int]:
        return [2 ** round(math.log2(image_size[0] / f.shape[-2])) for f in features]

    def forward(self, features: Sequence[Tensor], proposals: Sequence[Tensor], image_size: tuple[int, int]
                ) -> Tensor:   # [(B, C, H_l, W_l)], [Tensor[K_i, 4]] -> (sum K_i, C, S, S)
        strides = self.strides(features, image_size)
        if len(features) > 1:
            if self.op != "align":
                raise ValueError("RoI max pooling reads one map; a pyramid needs op='align'")
            return multiscale_roi_align(features, list(proposals), self.output_size, strides, self.sampling_ratio,
                                        self.canonical_size, self.canonical_level)
        if self.op == "pool":
            return roi_pool(features[0], list(proposals), self.output_size, 1.0 / strides[0])
        return roi_align(features[0], list(proposals), self.output_size, 1.0 / strides[0], self.sampling_ratio)


class TwoMLPHead(nn.Module):
    """The box head: the pooled feature flattened, then fc6 and fc7, each with a ReLU
    (torchvision's ``TwoMLPHead``; VGG's fc6/fc7 in the papers)."""

    def __init__(self, in_features: int, representation_size: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:   # (R, C, S, S) -> (R, representation_size)
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class FastRCNNPredictor(nn.Module):
    """Class scores over ``num_classes + 1`` (0 = background) and class-specific deltas
    ``4 * (num_classes + 1)``.  Initialised as Detectron: Gaussian weights of std 0.01 (scores)
    and 0.001 (deltas), zero biases, so that the first losses are those of uniform scores and
    zero deltas.

    Args:
        in_features: the box head's representation size.
        num_classes: object classes ``K``, background not counted.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, (num_classes + 1) * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:   # (R, F) -> (R, K + 1), (R, 4 (K + 1))
        return self.cls_score(x), self.bbox_pred(x)


class RoIHeads(nn.Module):
    """The second stage: RoI features, box head, predictor; its training samples and loss; its
    postprocessing.  Factored as torchvision's ``RoIHeads`` so that a subclass adds a branch
    (a mask head reads :meth:`select_training_samples`'s ``matched_idxs`` and ``labels``).

    Args:
        box_roi_pool: proposals -> fixed-size features (:class:`RoIPooler`).
        box_head: those features -> a vector per RoI (:class:`TwoMLPHead`).
        box_predictor: the vector -> class logits and class-specific deltas (:class:`FastRCNNPredictor`).
        fg_iou / bg_iou: a proposal is foreground at IoU >= ``fg_iou`` with its best ground
            truth, background below ``bg_iou``, ignored between.
        bg_iou_low: background proposals of IoU below this are ignored as well (Fast R-CNN's
            [0.1, 0.5) background; 0 keeps them all, as Faster R-CNN and torchvision).
        batch_size_per_image / positive_fraction: the RoI minibatch per image.
        bbox_reg_weights: the :class:`BoxCoder` weights of the deltas.
        score_thresh / nms_thresh / detections_per_img: inference.

    Training adds the ground-truth boxes to the proposals, matches, samples and returns
    ``{"cls": cross-entropy averaged over the sampled RoIs, "box": smooth L1 (beta 1/9) of the
    true class's deltas on the foreground RoIs, summed and divided by the number of sampled
    RoIs}`` (torchvision's ``fastrcnn_loss``).  Eval: softmax, every class's box decoded and
    clipped, scores above ``score_thresh``, boxes of at least 0.01 px, class-wise NMS, the
    ``detections_per_img`` best.
    """

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, box_predictor: nn.Module,
                 fg_iou: float = 0.5, bg_iou: float = 0.5, bg_iou_low: float = 0.0, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100) -> None:
        super().__init__()
        self.box_roi_pool, self.box_head, self.box_predictor = box_roi_pool, box_head, box_predictor
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality_matches=False)
        self.bg_iou_low = bg_iou_low
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.coder = BoxCoder(bbox_reg_weights)
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    def assign_targets(self, proposals: Sequence[Tensor], targets: Targets) -> tuple[list[Tensor], list[Tensor]]:
        """Per image the matched ground truth of each proposal (clamped to >= 0) and its label:
        ``c + 1`` for object class ``c``, 0 background, -1 ignored."""
        matched_idxs, labels = [], []
        for props, t in zip(proposals, targets):
            gt_boxes, gt_labels = t["boxes"].to(props), t["labels"].to(props.device)
            iou = box_iou(gt_boxes, props)                                                 # (M, N)
            matched = self.matcher(iou)
            lab = gt_labels[matched.clamp(min=0)] + 1 if len(gt_labels) else torch.zeros_like(matched)
            lab[matched == Matcher.BELOW_LOW_THRESHOLD] = 0
            lab[matched == Matcher.BETWEEN_THRESHOLDS] = -1
            if self.bg_iou_low > 0:
                best = iou.max(0).values if len(gt_labels) else torch.zeros(len(props), device=props.device)
                lab[best < self.bg_iou_low] = -1
            matched_idxs.append(matched.clamp(min=0))
            labels.append(lab)
        return matched_idxs, labels

    def select_training_samples(self, proposals: Sequence[Tensor], targets: Targets
                                ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """The sampled RoIs per image (ground truth added first), with their matched ground-truth
        index, label (background 0) and box regression target."""
        proposals = [torch.cat((p, t["boxes"].to(p))) for p, t in zip(proposals, targets)]
        matched_idxs, labels = self.assign_targets(proposals, targets)
        pos, neg = sample_balanced(labels, self.batch_size_per_image, self.positive_fraction)
        rois, regression_targets = [], []
        for i, (props, t) in enumerate(zip(proposals, targets)):
            keep = torch.where(pos[i] | neg[i])[0]
            rois.append(props[keep])
            matched_idxs[i], labels[i] = matched_idxs[i][keep], labels[i][keep]
            gt = t["boxes"].to(props) if len(t["boxes"]) else props.new_zeros(1, 4)
            regression_targets.append(self.coder.encode(gt[matched_idxs[i]], rois[i]))
        return rois, matched_idxs, labels, regression_targets

    def box_features(self, features: Sequence[Tensor], proposals: Sequence[Tensor], image_size: tuple[int, int]
                     ) -> Tensor:
        """The box head's vector ``(sum K_i, representation_size)`` of every proposal."""
        return self.box_head(self.box_roi_pool(features, proposals, image_size))

    def loss(self, class_logits: Tensor, box_regression: Tensor, labels: Sequence[Tensor],
             regression_targets: Sequence[Tensor]) -> dict[str, Tensor]:
        labels, targets = torch.cat(list(labels)), torch.cat(list(regression_targets))
        if len(labels) == 0:
            zero = class_logits.sum() * 0 + box_regression.sum() * 0
            return {"cls": zero, "box": zero}
        cls = F.cross_entropy(class_logits.float(), labels)
        pos = torch.where(labels > 0)[0]
        deltas = box_regression.float().reshape(len(labels), -1, 4)[pos, labels[pos]]
        box = F.smooth_l1_loss(deltas, targets[pos], beta=1 / 9, reduction="sum") / len(labels)
        return {"cls": cls, "box": box}

    @torch.no_grad()
    def postprocess_detections(self, class_logits: Tensor, box_regression: Tensor, proposals: Sequence[Tensor],
                               image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """``[dict(boxes, scores, labels)]`` per image (labels 0..K-1, scores descending)."""
        scores_all = F.softmax(class_logits.float(), -1)                                   # (R, K + 1)
        boxes_all = self.coder.decode(box_regression.float().reshape(len(scores_all), -1, 4),
                                      torch.cat(list(proposals)).float())                  # (R, K + 1, 4)
        out = []
        counts = [len(p) for p in proposals]
        for boxes, scores in zip(boxes_all.split(counts), scores_all.split(counts)):
            boxes = clip_boxes_to_image(boxes, image_size)[:, 1:].reshape(-1, 4)           # background dropped
            labels = torch.arange(scores.shape[1] - 1, device=scores.device).repeat(len(scores))
            out.append(filter_detections(boxes, scores[:, 1:].reshape(-1), labels, self.score_thresh,
                                         self.nms_thresh, self.detections_per_img))
        return out

    def forward(self, features: Sequence[Tensor], proposals: Sequence[Tensor], image_size: tuple[int, int],
                targets: Targets | None = None) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Training: ``([], {"cls", "box"})`` (``targets`` required); eval: ``(detections, {})``."""
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads in training mode need targets (boxes and labels per image)")
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, box_regression = self.box_predictor(self.box_features(features, proposals, image_size))
        if self.training:
            return [], self.loss(class_logits, box_regression, labels, regression_targets)
        return self.postprocess_detections(class_logits, box_regression, proposals, image_size), {}


# --------------------------------------------------------------------------- the detectors

class TwoStageDetector(nn.Module):
    """Backbone (+ neck) + proposer + :class:`RoIHeads`.

    Args:
        backbone: the registry classifier's stages.
        stage_ids: which of its stages feed the neck (or, without one, the heads).
        neck: maps those stages to the levels both stages read (an FPN), or None.
        proposer: ``(images, features, targets) -> (proposals, losses)`` (an RPN, or selective
            search behind :class:`SelectiveSearchProposer`).
        roi_heads: the second stage.
        num_classes: object classes ``K``.

    ``forward(images, targets=None)``: training -> ``{"loss", ...}`` (``loss`` the sum of the
    proposer's and the heads' terms: ``rpn_objectness``, ``rpn_box``, ``cls``, ``box``); eval ->
    ``[dict(boxes, scores, labels)]`` per image, plus whatever the heads add.  Targets may hold
    keys the model does not use (``masks``).
    """

    def __init__(self, backbone: BackboneFeatures, stage_ids: Sequence[int], neck: nn.Module | None,
                 proposer: nn.Module, roi_heads: RoIHeads, num_classes: int) -> None:
        super().__init__()
        self.backbone, self.stage_ids, self.neck = backbone, list(stage_ids), neck
        self.proposer, self.roi_heads, self.num_classes = proposer, roi_heads, num_classes

    def features(self, images: Tensor) -> list[Tensor]:
        """The maps both stages read, finest first."""
        stages = self.backbone(images)
        maps = [stages[i] for i in self.stage_ids]
        return self.neck(maps) if self.neck is not None else maps

    def forward(self, images: Tensor, targets: Targets | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError(f"{type(self).__name__} in training mode needs targets (a dict of boxes and labels per image)")
        feats = self.features(images)
        proposals, losses = self.proposer(images, feats, targets)
        detections, head_losses = self.roi_heads(feats, proposals, tuple(images.shape[-2:]), targets)
        if not self.training:
            return detections
        losses = {**losses, **head_losses}
        return {"loss": sum(losses.values()), **losses}


class SelectiveSearchProposer(nn.Module):
    """Selective search behind the proposer's face: the proposals of each image, cached for
    the training scenes (they never change), no loss."""

    def __init__(self, search) -> None:
        super().__init__()
        self.search = search

    def forward(self, images: Tensor, features: Sequence[Tensor], targets: Targets | None = None
                ) -> tuple[list[Tensor], dict[str, Tensor]]:
        proposals = self.search(images, use_cache=self.training)
        return [p.to(images.device, torch.float32) for p in proposals], {}


def _single_stage(backbone: str, in_chans: int, backbone_kwargs: dict | None, stride: int
                  ) -> tuple[BackboneFeatures, int, int]:
    """The backbone of a single-level model, the index of its stage of ``stride`` and its channels."""
    body = BackboneFeatures(backbone, in_chans, **(backbone_kwargs or {}))
    stage = body.stages_at([stride], backbone)[0]
    return body, stage, body.channels[stage]


def _check_box_options(num_classes: int, roi_size: int, representation_size: int, positive_fraction: float) -> None:
    if num_classes < 1:
        raise UserError(f"num_classes is {num_classes}; a detector needs at least one class")
    if roi_size < 1 or representation_size < 1:
        raise UserError(f"model.kwargs.roi_size ({roi_size}) and representation_size ({representation_size}) "
                        "must be positive")
    if not 0 < positive_fraction <= 1:
        raise UserError(f"model.kwargs.box_positive_fraction must lie in (0, 1], got {positive_fraction}")


def _rpn(anchors: AnchorGenerator, chs: int, fg_iou: float, bg_iou: float, batch_size_per_image: int,
         positive_fraction: float, pre_nms_top_n: Sequence[int], post_nms_top_n: Sequence[int],
         nms_thresh: float) -> RegionProposalNetwork:
    if not 0 <= bg_iou <= fg_iou <= 1:
        raise UserError(f"model.kwargs.rpn_bg_iou {bg_iou} and rpn_fg_iou {fg_iou}: need 0 <= bg <= fg <= 1")
    if not all(isinstance(n, (list, tuple)) and len(n) == 2 for n in (pre_nms_top_n, post_nms_top_n)):
        raise UserError("model.kwargs.rpn_pre_nms_top_n and rpn_post_nms_top_n are [training, testing] pairs, "
                        f"got {pre_nms_top_n!r} and {post_nms_top_n!r}: e.g. --set model.kwargs.rpn_pre_nms_top_n=[150,150]")
    head = RPNHead(chs, anchors.num_anchors_per_location()[0])
    return RegionProposalNetwork(anchors, head, fg_iou, bg_iou, batch_size_per_image, positive_fraction,
                                 dict(zip(("training", "testing"), pre_nms_top_n)),
                                 dict(zip(("training", "testing"), post_nms_top_n)), nms_thresh)


class FastRCNN(TwoStageDetector):
    """Fast R-CNN: selective-search proposals, RoI max pooling on the backbone stage of
    ``stride``, fc head, softmax + class-specific deltas; see the module docstring.

    Args:
        num_classes / in_chans / backbone / backbone_kwargs: as every vislab detector.
        stride: the backbone stage the RoIs are pooled from (8: an 8x8 map on 64 px scenes).
        search_mode / max_proposals: :class:`SelectiveSearch`'s settings.
        roi_size / representation_size: RoI pooling bins per side; the fc layers' width.
        box_*: :class:`RoIHeads`'s sampling (the paper's 64 RoIs, 25% foreground at IoU >= 0.5,
            background in [0.1, 0.5)).
        score_thresh / nms_thresh / detections_per_img: inference.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, stride: int = 8, search_mode: str = "fast",
                 max_proposals: int = 300, roi_size: int = 7, representation_size: int = 256,
                 box_fg_iou: float = 0.5, box_bg_iou: float = 0.5, box_bg_iou_low: float = 0.1,
                 box_batch_size_per_image: int = 64, box_positive_fraction: float = 0.25,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100) -> None:
        from vislab.detection.proposals import SelectiveSearch
        _check_box_options(num_classes, roi_size, representation_size, box_positive_fraction)
        body, stage, chs = _single_stage(backbone, in_chans, backbone_kwargs, stride)
        heads = RoIHeads(RoIPooler(roi_size, "pool"), TwoMLPHead(chs * roi_size ** 2, representation_size),
                         FastRCNNPredictor(representation_size, num_classes), box_fg_iou, box_bg_iou, box_bg_iou_low,
                         box_batch_size_per_image, box_positive_fraction, score_thresh=score_thresh,
                         nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        proposer = SelectiveSearchProposer(SelectiveSearch(mode=search_mode, max_proposals=max_proposals, cache=True))
        super().__init__(body, [stage], None, proposer, heads, num_classes)


class FasterRCNN(TwoStageDetector):
    """Faster R-CNN: an RPN and RoI max pooling on the one backbone stage of ``stride``;
    see the module docstring.

    Args:
        num_classes / in_chans / backbone / backbone_kwargs: as every vislab detector.
        stride: the backbone stage both stages read (8: an 8x8 map on 64 px scenes).
        anchor_sizes / aspect_ratios: every size times every ratio (height / width) at each
            position of the map.
        rpn_fg_iou / rpn_bg_iou / rpn_batch_size_per_image / rpn_positive_fraction: the RPN's
            matching and minibatch (the paper's 0.7 / 0.3 / 256 / 0.5).
        rpn_pre_nms_top_n / rpn_post_nms_top_n: ``[training, testing]`` proposals kept before NMS
            (per level) and after it (per image); rpn_nms_thresh: the NMS IoU.
        roi_size / representation_size: RoI bins per side; the fc layers' width.
        box_*: the RoI minibatch (:class:`RoIHeads`); score_thresh / nms_thresh /
            detections_per_img: inference.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, stride: int = 8,
                 anchor_sizes: Sequence[float] = (12, 24, 48), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 rpn_fg_iou: float = 0.7, rpn_bg_iou: float = 0.3, rpn_batch_size_per_image: int = 256,
                 rpn_positive_fraction: float = 0.5, rpn_pre_nms_top_n: Sequence[int] = (300, 300),
                 rpn_post_nms_top_n: Sequence[int] = (200, 100), rpn_nms_thresh: float = 0.7, roi_size: int = 7,
                 representation_size: int = 256, box_fg_iou: float = 0.5, box_bg_iou: float = 0.5,
                 box_batch_size_per_image: int = 64, box_positive_fraction: float = 0.25,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100) -> None:
        _check_box_options(num_classes, roi_size, representation_size, box_positive_fraction)
        body, stage, chs = _single_stage(backbone, in_chans, backbone_kwargs, stride)
        anchors = AnchorGenerator((tuple(anchor_sizes),), (tuple(aspect_ratios),))
        rpn = _rpn(anchors, chs, rpn_fg_iou, rpn_bg_iou, rpn_batch_size_per_image, rpn_positive_fraction,
                   rpn_pre_nms_top_n, rpn_post_nms_top_n, rpn_nms_thresh)
        heads = RoIHeads(RoIPooler(roi_size, "pool"), TwoMLPHead(chs * roi_size ** 2, representation_size),
                         FastRCNNPredictor(representation_size, num_classes), box_fg_iou, box_bg_iou, 0.0,
                         box_batch_size_per_image, box_positive_fraction, score_thresh=score_thresh,
                         nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        super().__init__(body, [stage], None, rpn, heads, num_classes)


class FasterRCNNFPN(TwoStageDetector):
    """Faster R-CNN on a feature pyramid: FPN levels of ``strides``, the RPN on each (one anchor
    size per level), RoIAlign from the level of each RoI's size; see the module docstring.
    :meth:`build_roi_heads` is the place a subclass (Mask R-CNN) adds its branch.

    Args:
        num_classes / in_chans / backbone / backbone_kwargs: as every vislab detector.
        strides / fpn_chs: the backbone stages the FPN reads (every one a pyramid level), and
            the pyramid's channels.
        anchor_sizes / aspect_ratios: one anchor size per level, times every ratio.
        rpn_*: as :class:`FasterRCNN`'s (``pre_nms_top_n`` is per level).
        roi_size / sampling_ratio: RoIAlign's bins per side and samples per bin and side.
        canonical_size / canonical_level: the level rule ``k = floor(k0 + log2(sqrt(wh) / size))``.
        representation_size / box_* / score_thresh / nms_thresh / detections_per_img: as
            :class:`FasterRCNN`'s.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, strides: Sequence[int] = (4, 8, 16), fpn_chs: int = 64,
                 anchor_sizes: Sequence[float] = (12, 24, 48), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 rpn_fg_iou: float = 0.7, rpn_bg_iou: float = 0.3, rpn_batch_size_per_image: int = 256,
                 rpn_positive_fraction: float = 0.5, rpn_pre_nms_top_n: Sequence[int] = (150, 150),
                 rpn_post_nms_top_n: Sequence[int] = (200, 100), rpn_nms_thresh: float = 0.7, roi_size: int = 7,
                 sampling_ratio: int = 2, canonical_size: float = 32, canonical_level: int = 3,
                 representation_size: int = 256, box_fg_iou: float = 0.5, box_bg_iou: float = 0.5,
                 box_batch_size_per_image: int = 64, box_positive_fraction: float = 0.25,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100) -> None:
        _check_box_options(num_classes, roi_size, representation_size, box_positive_fraction)
        if len(anchor_sizes) != len(strides):
            raise UserError(f"{len(strides)} strides but {len(anchor_sizes)} anchor_sizes: give one anchor size per level")
        if list(strides) != [strides[0] * 2 ** i for i in range(len(strides))]:
            raise UserError(f"model.kwargs.strides {list(strides)} must double from level to level (e.g. 4, 8, 16)")
        body = BackboneFeatures(backbone, in_chans, **(backbone_kwargs or {}))
        stage_ids = body.stages_at(strides, backbone)
        anchors = AnchorGenerator(tuple((float(s),) for s in anchor_sizes), (tuple(aspect_ratios),))
        rpn = _rpn(anchors, fpn_chs, rpn_fg_iou, rpn_bg_iou, rpn_batch_size_per_image, rpn_positive_fraction,
                   rpn_pre_nms_top_n, rpn_post_nms_top_n, rpn_nms_thresh)
        pooler = RoIPooler(roi_size, "align", sampling_ratio, canonical_size, canonical_level)
        heads = self.build_roi_heads(
            num_classes, fpn_chs, pooler, TwoMLPHead(fpn_chs * roi_size ** 2, representation_size),
            FastRCNNPredictor(representation_size, num_classes), fg_iou=box_fg_iou, bg_iou=box_bg_iou,
            batch_size_per_image=box_batch_size_per_image, positive_fraction=box_positive_fraction,
            score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        super().__init__(body, stage_ids, FPN([body.channels[i] for i in stage_ids], fpn_chs), rpn, heads, num_classes)
        self.strides, self.fpn_chs = list(strides), fpn_chs

    def build_roi_heads(self, num_classes: int, fpn_chs: int, box_roi_pool: RoIPooler, box_head: nn.Module,
                        box_predictor: nn.Module, **kwargs) -> RoIHeads:
        """The second stage; ``kwargs`` are :class:`RoIHeads`'s sampling and inference options.
        Called before ``nn.Module.__init__`` has run: build modules here, set no attributes."""
        return RoIHeads(box_roi_pool, box_head, box_predictor, **kwargs)


# --------------------------------------------------------------------------- registered factories

@register_model(kind="detection")
def fast_rcnn(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18", backbone_kwargs: dict | None = None,
              stride: int = 8, search_mode: str = "fast", max_proposals: int = 300, roi_size: int = 7,
              representation_size: int = 256, box_fg_iou: float = 0.5, box_bg_iou: float = 0.5,
              box_bg_iou_low: float = 0.1, box_batch_size_per_image: int = 64, box_positive_fraction: float = 0.25,
              score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100) -> FastRCNN:
    """Fast R-CNN: selective-search proposals, 7x7 RoI max pooling on the stride-8 stage, fc head."""
    return FastRCNN(**locals())


@register_model(kind="detection")
def faster_rcnn(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
                backbone_kwargs: dict | None = None, stride: int = 8, anchor_sizes: tuple[float, ...] = (12, 24, 48),
                aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0), rpn_fg_iou: float = 0.7, rpn_bg_iou: float = 0.3,
                rpn_batch_size_per_image: int = 256, rpn_positive_fraction: float = 0.5,
                rpn_pre_nms_top_n: tuple[int, int] = (300, 300), rpn_post_nms_top_n: tuple[int, int] = (200, 100),
                rpn_nms_thresh: float = 0.7, roi_size: int = 7, representation_size: int = 256,
                box_fg_iou: float = 0.5, box_bg_iou: float = 0.5, box_batch_size_per_image: int = 64,
                box_positive_fraction: float = 0.25, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                detections_per_img: int = 100) -> FasterRCNN:
    """Faster R-CNN: RPN (9 anchors per position) and 7x7 RoI max pooling on the stride-8 stage."""
    return FasterRCNN(**locals())


@register_model(kind="detection")
def faster_rcnn_fpn(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
                    backbone_kwargs: dict | None = None, strides: tuple[int, ...] = (4, 8, 16), fpn_chs: int = 64,
                    anchor_sizes: tuple[float, ...] = (12, 24, 48), aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                    rpn_fg_iou: float = 0.7, rpn_bg_iou: float = 0.3, rpn_batch_size_per_image: int = 256,
                    rpn_positive_fraction: float = 0.5, rpn_pre_nms_top_n: tuple[int, int] = (150, 150),
                    rpn_post_nms_top_n: tuple[int, int] = (200, 100), rpn_nms_thresh: float = 0.7,
                    roi_size: int = 7, sampling_ratio: int = 2, canonical_size: float = 32,
                    canonical_level: int = 3, representation_size: int = 256, box_fg_iou: float = 0.5,
                    box_bg_iou: float = 0.5, box_batch_size_per_image: int = 64, box_positive_fraction: float = 0.25,
                    score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100) -> FasterRCNNFPN:
    """Faster R-CNN + FPN: P2-P4 (strides 4/8/16), RPN on every level, 7x7 RoIAlign by RoI size."""
    return FasterRCNNFPN(**locals())


__all__ = ["FastRCNN", "FastRCNNPredictor", "FasterRCNN", "FasterRCNNFPN", "RoIHeads", "RoIPooler",
           "SelectiveSearchProposer", "TwoMLPHead", "TwoStageDetector", "fast_rcnn", "faster_rcnn", "faster_rcnn_fpn"]
