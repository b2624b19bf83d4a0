"""Panoptic FPN (Kirillov, Girshick, He and Dollar 2019, "Panoptic Feature Pyramid Networks"):
Mask R-CNN plus a semantic-segmentation branch on the same FPN, and a heuristic merge of the two.

Semantic branch (:class:`SemanticFPNHead`): on every pyramid level, stages of 3x3 conv +
GroupNorm + ReLU + 2x bilinear upsampling until the level reaches the finest level's scale (the
finest level gets one conv stage, no upsampling); the levels are summed, a 1x1 conv gives one
logit per stuff class plus one "other" class for every pixel of a thing (the paper's choice:
the branch does not tell things apart, the instance branch does), and bilinear upsampling brings
them to the image.  The paper works from P2-P5 at 1/4 to 1/32 with 128 channels; here the
levels are the instance branch's FPN levels without its extra (pooled) ones, 1/4 to 1/16 of a
64x64 scene, with ``semantic_chs`` channels.  Its loss is the per-pixel cross-entropy against
the stuff map (``NO_STUFF`` pixels -> "other"), weighted by ``semantic_weight`` (the paper's
``lambda_s``; it tunes 0.5 on COCO and 1.0 on Cityscapes, and 0.5 is kept here).

Merge (:func:`panoptic_merge`, Sec. 4 of the paper, as detectron2's
``combine_semantic_and_instance_outputs``): instances by decreasing score, those under
``score_thresh`` dropped; each pixel goes to the first (highest-scoring) instance whose mask
covers it, and an instance that loses more than ``overlap_thresh`` of its mask to better ones is
dropped whole; the remaining pixels take the semantic branch's stuff class, and a stuff region
smaller than ``stuff_area`` pixels is left void.  detectron2 keeps stuff of at least 4096 px on
800x1333 COCO images (0.4 % of the image); 16 px is the same share of 64x64 scenes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.detection.mask_rcnn import MaskRCNN
from vislab.detection.scenes import NO_STUFF
from vislab.detection.two_stage import Targets
from vislab.errors import UserError
from vislab.models.registry import register_model

VOID = -1                 # the category of a pixel the merge leaves unlabelled


class SemanticFPNHead(nn.Module):
    """The semantic branch of Panoptic FPN; see the module docstring.

    Args:
        in_chs: channels of the pyramid levels.
        strides: each level's stride, finest first (the finest one is the output scale).
        num_classes: output classes (stuff classes + 1 "other").
        mid_chs: channels of the conv stages (128 in the paper).
        groups: GroupNorm groups (32 in the paper; at most ``mid_chs``).
    """

    def __init__(self, in_chs: int, strides: Sequence[int], num_classes: int, mid_chs: int = 128,
                 groups: int = 32) -> None:
        super().__init__()
        groups = math.gcd(groups, mid_chs)
        self.strides = list(strides)
        self.scale_heads = nn.ModuleList()
        for s in self.strides:
            ups = round(math.log2(s / self.strides[0]))
            if 2 ** ups * self.strides[0] != s:
                raise ValueError(f"level strides {self.strides}: each must be the finest one times a power of 2")
            stages: list[nn.Module] = []
            for k in range(max(ups, 1)):
                stages += [nn.Conv2d(in_chs if k == 0 else mid_chs, mid_chs, 3, padding=1, bias=False),
                           nn.GroupNorm(groups, mid_chs), nn.ReLU(inplace=True)]
                if ups:
                    stages.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*stages))
        self.predictor = nn.Conv2d(mid_chs, num_classes, 1)
        self.init_weights()

    def init_weights(self) -> None:
        """He (fan-out) initialisation of the convs and zero biases, as detectron2's
        ``SemSegFPNHead`` (``c2_msra_fill``); the predictor at std 0.001 so every class starts
        equally likely."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)

    def forward(self, feats: Sequence[Tensor], image_size: tuple[int, int]) -> Tensor:
        """Logits ``(B, num_classes, H, W)`` at the image size from levels ``[(B, C, H_i, W_i)]``."""
        x = self.scale_heads[0](feats[0])                                      # (B, mid, H/s0, W/s0)
        for head, f in zip(self.scale_heads[1:], feats[1:]):
            y = head(f)
            x = x + (y if y.shape[-2:] == x.shape[-2:] else F.interpolate(y, size=x.shape[-2:], mode="bilinear",
                                                                          align_corners=False))
        return F.interpolate(self.predictor(x), size=image_size, mode="bilinear", align_corners=False)


def semantic_loss(logits: Tensor, stuff_maps: Tensor, num_stuff: int, no_stuff: int = NO_STUFF,
                  ignore_index: int = -100) -> Tensor:
    """Cross-entropy of logits ``(B, S + 1, H, W)`` against stuff maps ``(B, H, W)``: stuff
    class ``0..S-1``, ``no_stuff`` (a thing's pixel) -> the "other" class ``S``; pixels equal to
    ``ignore_index`` do not count.  Computed in float32."""
    target = stuff_maps.long()
    target = torch.where(target == no_stuff, torch.full_like(target, num_stuff), target)
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)


@torch.no_grad()
def panoptic_merge(instances: dict[str, Tensor], semantic_logits: Tensor, num_things: int,
                   score_thresh: float = 0.5, overlap_thresh: float = 0.5, mask_thresh: float = 0.5,
                   stuff_area: int = 16) -> Tensor:
    """One image's panoptic map ``(H, W, 2)`` int64 (category, instance id) from the instance
    and semantic branches (the paper's heuristic; see the module docstring).

    Args:
        instances: ``scores`` ``(n,)``, ``labels`` ``(n,)`` (things ``0..K-1``) and ``masks``
            ``(n, H, W)`` probabilities pasted into the image.
        semantic_logits: ``(S + 1, H, W)``: stuff classes, then "other" (things).
        num_things: ``K``; stuff class ``s`` becomes category ``K + s``.
        score_thresh: instances scoring less are dropped.
        overlap_thresh: an instance whose mask is covered more than this fraction by better ones
            is dropped.
        mask_thresh: a mask pixel belongs to the instance at this probability.
        stuff_area: a stuff region (the pixels of one stuff class left after the instances)
            smaller than this many pixels is left void.

    Things get instance ids ``1, 2, ...`` in the order they are placed (decreasing score);
    stuff has instance id 0; void pixels are ``(VOID, 0)``.
    """
    num_classes, h, w = semantic_logits.shape
    out = torch.zeros((h, w, 2), dtype=torch.int64, device=semantic_logits.device)
    out[..., 0] = VOID
    taken = torch.zeros((h, w), dtype=torch.bool, device=semantic_logits.device)
    order = torch.argsort(instances["scores"], descending=True, stable=True)
    next_id = 1
    for k in order.tolist():
        if instances["scores"][k] < score_thresh:
            break
        mask = instances["masks"][k] >= mask_thresh
        area = int(mask.sum())
        if area == 0 or int((mask & taken).sum()) > overlap_thresh * area:
            continue
        mask &= ~taken
        out[..., 0][mask] = int(instances["labels"][k])
        out[..., 1][mask] = next_id
        taken |= mask
        next_id += 1
    semantic = semantic_logits.argmax(0)
    for c in range(num_classes - 1):                  # the last class is "other" (things)
        region = (semantic == c) & ~taken
        if int(region.sum()) >= stuff_area:
            out[..., 0][region] = num_things + c
    return out


class PanopticFPN(MaskRCNN):
    """Mask R-CNN (:class:`~vislab.detection.mask_rcnn.MaskRCNN`) + the semantic branch on the
    same FPN levels; see the module docstring.  Training returns Mask R-CNN's loss dict plus
    ``semantic`` (already times ``semantic_weight``), targets holding ``semantic`` ``(H, W)``
    stuff maps beside boxes, labels and masks; eval returns Mask R-CNN's detections per image
    plus ``panoptic`` ``(H, W, 2)`` int64 (:func:`panoptic_merge`) and ``semantic`` ``(H, W)``
    int64 (the branch's class per pixel: stuff ``0..S-1``, ``S`` for "other").

    Args:
        num_stuff: stuff classes ``S`` (panoptic categories ``K..K+S-1``).
        semantic_chs / semantic_groups: the branch's channels and GroupNorm groups.
        semantic_weight: the semantic loss's weight (the paper's ``lambda_s``).
        panoptic_score_thresh / overlap_thresh / mask_thresh / stuff_area: the merge's options.
        kwargs: every option of :class:`~vislab.detection.mask_rcnn.MaskRCNN`.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, num_stuff: int = 3, semantic_chs: int = 64,
                 semantic_groups: int = 32, semantic_weight: float = 0.5, panoptic_score_thresh: float = 0.5,
                 overlap_thresh: float = 0.5, mask_thresh: float = 0.5, stuff_area: int = 16, **kwargs) -> None:
        if num_stuff < 1:
            raise UserError(f"model.kwargs.num_stuff is {num_stuff}; Panoptic FPN needs at least one stuff class")
        if semantic_chs < 1 or semantic_weight < 0:
            raise UserError(f"model.kwargs.semantic_chs ({semantic_chs}) must be positive and semantic_weight "
                            f"({semantic_weight}) at least 0")
        super().__init__(num_classes, in_chans, **kwargs)
        self.num_stuff, self.semantic_weight = num_stuff, semantic_weight
        self.semantic_head = SemanticFPNHead(self.fpn_chs, self.strides, num_stuff + 1, semantic_chs, semantic_groups)
        self.merge_options = {"score_thresh": panoptic_score_thresh, "overlap_thresh": overlap_thresh,
                              "mask_thresh": mask_thresh, "stuff_area": stuff_area}

    def forward(self, images: Tensor, targets: Targets | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and (targets is None or any("semantic" not in t for t in targets)):
            raise ValueError("PanopticFPN in training mode needs targets with boxes, labels, masks and a "
                             "semantic (stuff) map per image")
        size = tuple(images.shape[-2:])
        feats = self.features(images)
        proposals, losses = self.proposer(images, feats, targets)
        detections, head_losses = self.roi_heads(feats, proposals, size, targets)
        logits = self.semantic_head(feats, size)                                # (B, S + 1, H, W)
        if self.training:
            stuff = torch.stack([t["semantic"] for t in targets]).to(logits.device)
            losses = {**losses, **head_losses,
                      "semantic": self.semantic_weight * semantic_loss(logits, stuff, self.num_stuff)}
            return {"loss": sum(losses.values()), **losses}
        for det, lg in zip(detections, logits.float()):
            det["panoptic"] = panoptic_merge(det, lg, self.num_classes, **self.merge_options)
            det["semantic"] = lg.argmax(0)
        return detections


@register_model(kind="detection")
def panoptic_fpn(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, strides: tuple[int, ...] = (4, 8, 16), fpn_chs: int = 64,
                 anchor_sizes: tuple[float, ...] = (12, 24, 48), aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                 rpn_fg_iou: float = 0.7, rpn_bg_iou: float = 0.3, rpn_batch_size_per_image: int = 256,
                 rpn_positive_fraction: float = 0.5, rpn_pre_nms_top_n: tuple[int, int] = (150, 150),
                 rpn_post_nms_top_n: tuple[int, int] = (200, 100), rpn_nms_thresh: float = 0.7,
                 roi_size: int = 7, sampling_ratio: int = 2, canonical_size: float = 32,
                 canonical_level: int = 3, representation_size: int = 256, box_fg_iou: float = 0.5,
                 box_bg_iou: float = 0.5, box_batch_size_per_image: int = 64, box_positive_fraction: float = 0.25,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 mask_roi_size: int = 7, mask_num_convs: int = 2, mask_chs: int = 64, num_stuff: int = 3,
                 semantic_chs: int = 64, semantic_groups: int = 32, semantic_weight: float = 0.5,
                 panoptic_score_thresh: float = 0.5, overlap_thresh: float = 0.5, mask_thresh: float = 0.5,
                 stuff_area: int = 16) -> PanopticFPN:
    """Panoptic FPN: Mask R-CNN (P2-P4) + a semantic branch on the same levels (64 channels, stuff
    + "other"), merged by score, overlap and stuff area."""
    return PanopticFPN(**locals())


__all__ = ["VOID", "PanopticFPN", "SemanticFPNHead", "panoptic_fpn", "panoptic_merge", "semantic_loss"]
