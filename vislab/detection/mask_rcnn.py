"""Mask R-CNN (He, Gkioxari, Dollar and Girshick 2017): Faster R-CNN + FPN with a third branch
that predicts a binary mask for every RoI, in parallel with the class and box branches.

The mask branch (:class:`MaskHead`) is a small fully convolutional network on a RoIAlign
feature of each RoI: ``num_convs`` 3x3 convs + ReLU, a 2x2 stride-2 transposed conv + ReLU that
doubles the resolution, and a 1x1 conv to ``K`` mask logits -- one binary mask per class, so
that classes do not compete for pixels (the paper's "decoupled" masks, against a per-pixel
softmax); the class branch decides which one is used.  RoIAlign matters here: RoI pooling's two
roundings misplace the feature by up to a cell, harmless for a box score but not for a
pixel-accurate mask.

Training: the mask loss is the mean binary cross-entropy of the ground-truth class's channel
only, over the *positive* sampled RoIs only (:func:`mask_loss`); its target is the ground-truth
mask of the RoI's matched object cropped and resampled onto the RoI's ``M x M`` grid by RoIAlign
(:func:`project_masks_on_boxes`).  The total loss is RPN + class + box + mask, each weight 1.
Inference: the box branch's final detections (after NMS) are the RoIs of the mask branch; each
detection keeps the sigmoid of its predicted class's channel, pasted into the image inside its
box (:func:`paste_masks_in_image`).  The three follow torchvision's ``roi_heads`` functions, which
the tests compare.

Scaled to vislab's 64x64 scenes (objects 11-42 px): the paper's FPN mask head has 4 convs of 256
channels on 14x14 RoIAlign features and gives 28x28 masks for objects on ~800 px images; here
the defaults are 2 convs of 64 channels (the FPN's width) on 7x7 features, giving 14x14 masks --
one mask cell per 1-3 pixels of an object, about the resolution of the Fashion-MNIST items
themselves (28 px at scale 1), and a quarter of the compute of 14x14 features, which the
CPU-budget recipe needs.  ``mask_roi_size=14, mask_num_convs=4`` is the paper's head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.detection.roi import roi_align
from vislab.detection.two_stage import FasterRCNNFPN, RoIHeads, RoIPooler, Targets
from vislab.errors import UserError
from vislab.models.registry import register_model

# --------------------------------------------------------------------------- the mask branch


class MaskHead(nn.Module):
    """Mask R-CNN's FPN mask head: ``(R, C, S, S)`` RoI features -> ``(R, K, 2S, 2S)`` logits.

    Args:
        in_chs: channels of the RoI features (the FPN's).
        num_classes: ``K``, one mask per object class (no background mask).
        num_convs: 3x3 conv + ReLU layers (4 in the paper).
        chs: their channels (256 in the paper).
    """

    def __init__(self, in_chs: int, num_classes: int, num_convs: int = 4, chs: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k in range(num_convs):
            layers += [nn.Conv2d(in_chs if k == 0 else chs, chs, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(chs if num_convs else in_chs, chs, 2, stride=2)
        self.predictor = nn.Conv2d(chs, num_classes, 1)
        self.init_weights()

    def init_weights(self) -> None:
        """He (fan-out) weights and zero biases, as torchvision's and Detectron's mask heads."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:   # (R, C, S, S) -> (R, K, 2S, 2S)
        x = self.convs(x)
        x = F.relu(self.upsample(x))
        return self.predictor(x)


def project_masks_on_boxes(gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, M: int) -> Tensor:
    """The ``M x M`` mask targets of RoIs: each RoI's matched ground-truth mask resampled onto the
    RoI's grid by RoIAlign (one sample per pixel of the mask, no half-pixel shift), as
    torchvision's ``project_masks_on_boxes``.

    Args:
        gt_masks: ``Tensor[G, H, W]`` the image's object masks (0/1, any dtype).
        boxes: ``Tensor[P, 4]`` RoIs in pixels; matched_idxs: ``Tensor[P]`` their objects.

    Returns ``Tensor[P, M, M]`` float in ``[0, 1]``.
    """
    if gt_masks.dim() != 3 or boxes.dim() != 2 or boxes.shape[-1] != 4 or len(matched_idxs) != len(boxes):
        raise ValueError(f"need gt_masks (G, H, W), boxes (P, 4) and matched_idxs (P,), got "
                         f"{tuple(gt_masks.shape)}, {tuple(boxes.shape)} and {tuple(matched_idxs.shape)}")
    rois = torch.cat([matched_idxs[:, None].to(boxes), boxes], 1)
    return roi_align(gt_masks[:, None].to(rois), rois, (M, M), 1.0)[:, 0]


def mask_loss(mask_logits: Tensor, proposals: Sequence[Tensor], gt_masks: Sequence[Tensor],
              gt_labels: Sequence[Tensor], matched_idxs: Sequence[Tensor]) -> Tensor:
    """Mask R-CNN's mask loss: binary cross-entropy of the ground-truth class's channel against
    the projected mask, averaged over the pixels of all positive RoIs (torchvision's
    ``maskrcnn_loss``, with vislab's labels ``0..K-1`` indexing the channels directly).

    Args:
        mask_logits: ``Tensor[P, K, M, M]`` of the positive RoIs of all images, in order.
        proposals: per image the positive RoIs ``Tensor[P_i, 4]``.
        gt_masks / gt_labels: per image the objects' masks ``Tensor[G_i, H, W]`` and labels.
        matched_idxs: per image each positive RoI's object ``Tensor[P_i]``.

    Returns a scalar (0, still connected to the graph, without positive RoIs).
    """
    M = mask_logits.shape[-1]
    labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, matched_idxs)])
    targets = torch.cat([project_masks_on_boxes(m, p, idx, M)
                         for m, p, idx in zip(gt_masks, proposals, matched_idxs)])
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    picked = mask_logits[torch.arange(len(labels), device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(picked.float(), targets.float())


def _paste_weights(start: Tensor, end: Tensor, size: int, padded: int) -> Tensor:
    """Per mask, the bilinear weights ``(n, size, padded)`` that put the ``padded``-cell mask
    resized to ``end - start + 1`` pixels (at least 1; ``F.interpolate``'s ``align_corners=False``
    sampling) at pixels ``start..end`` of an image axis of ``size`` pixels; zero rows elsewhere."""
    length = (end - start + 1).clamp(min=1)
    pos = torch.arange(size, device=start.device)
    j = pos[None] - start[:, None]                                                       # (n, size)
    inside = (j >= 0) & (pos[None] <= end[:, None])
    scale = padded / length.to(torch.float32)
    src = ((j.to(torch.float32) + 0.5) * scale[:, None] - 0.5).clamp(min=0)
    lo = src.floor().to(torch.int64).clamp(max=padded - 1)
    hi = (lo + 1).clamp(max=padded - 1)
    frac = (src - lo).clamp(0, 1)
    weights = F.one_hot(lo, padded) * (1 - frac)[..., None] + F.one_hot(hi, padded) * frac[..., None]
    return weights * inside[..., None]


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], padding: int = 1) -> Tensor:
    """Masks predicted on each box's ``M x M`` grid, pasted into the image: torchvision's
    ``paste_masks_in_image``.  Each mask is padded by ``padding`` zero cells (so that it fades
    out at the box's edge instead of stopping), its box enlarged by the same factor and cut to
    whole pixels, the mask resized bilinearly to that box and written into it (the part inside
    the image).  The resizing is the two separable interpolation matrices of every mask at once,
    rather than torchvision's loop over masks.

    Args:
        masks: ``Tensor[N, M, M]`` probabilities; boxes: ``Tensor[N, 4]`` in pixels.
        image_size: ``(H, W)``.

    Returns ``Tensor[N, H, W]`` (0 outside each box).
    """
    if masks.dim() != 3 or masks.shape[-1] != masks.shape[-2] or boxes.shape != (len(masks), 4):
        raise ValueError(f"need square masks (N, M, M) and boxes (N, 4), got {tuple(masks.shape)} and "
                         f"{tuple(boxes.shape)}")
    H, W = image_size
    if len(masks) == 0:
        return masks.new_zeros(0, H, W)
    M = masks.shape[-1]
    padded = F.pad(masks, (padding,) * 4)                                                # (N, M + 2p, M + 2p)
    scale = float(M + 2 * padding) / M
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5
    b = torch.cat([centre - half, centre + half], 1).to(torch.int64)                  # truncated, as torchvision
    rows = _paste_weights(b[:, 1], b[:, 3], H, M + 2 * padding).to(masks.dtype)          # (N, H, M + 2p)
    cols = _paste_weights(b[:, 0], b[:, 2], W, M + 2 * padding).to(masks.dtype)          # (N, W, M + 2p)
    return rows @ padded @ cols.transpose(1, 2)


# --------------------------------------------------------------------------- the second stage with masks

class MaskRoIHeads(RoIHeads):
    """:class:`RoIHeads` plus the mask branch: its RoIAlign, :class:`MaskHead`, loss and pasting.

    Args:
        box_roi_pool / box_head / box_predictor: as :class:`RoIHeads`.
        mask_roi_pool: the RoIAlign of the mask branch (:class:`RoIPooler`, its own size).
        mask_head: :class:`MaskHead`.
        kwargs: :class:`RoIHeads`'s sampling and inference options.
    """

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, box_predictor: nn.Module,
                 mask_roi_pool: nn.Module, mask_head: nn.Module, **kwargs) -> None:
        super().__init__(box_roi_pool, box_head, box_predictor, **kwargs)
        self.mask_roi_pool, self.mask_head = mask_roi_pool, mask_head
        # the same RoIAlign for both branches: in training the positive RoIs' mask features are
        # rows of the box branch's (the positives are among the sampled RoIs), pooled once
        self.shared_pool = vars(mask_roi_pool) == vars(box_roi_pool) if isinstance(mask_roi_pool, RoIPooler) else False

    def mask_logits(self, features: Sequence[Tensor], boxes: Sequence[Tensor], image_size: tuple[int, int]) -> Tensor:
        """``(sum n_i, K, M, M)`` mask logits of the boxes of every image."""
        return self.mask_head(self.mask_roi_pool(features, boxes, image_size))

    def forward(self, features: Sequence[Tensor], proposals: Sequence[Tensor], image_size: tuple[int, int],
                targets: Targets | None = None) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Training: ``([], {"cls", "box", "mask"})``; eval: detections with ``masks`` ``(n, H, W)``."""
        if not self.training:
            detections, _ = super().forward(features, proposals, image_size)
            boxes = [d["boxes"] for d in detections]
            logits = self.mask_logits(features, boxes, image_size)
            labels = torch.cat([d["labels"] for d in detections])
            probs = logits[torch.arange(len(labels), device=labels.device), labels].float().sigmoid()
            for d, p in zip(detections, probs.split([len(b) for b in boxes])):
                d["masks"] = paste_masks_in_image(p, d["boxes"], image_size)
            return detections, {}
        if targets is None or any("masks" not in t for t in targets):
            raise ValueError("Mask R-CNN in training mode needs targets with boxes, labels and masks per image")
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        pooled = self.box_roi_pool(features, proposals, image_size)                       # (R, C, S, S)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        losses = self.loss(class_logits, box_regression, labels, regression_targets)
        positive = [torch.where(lab > 0)[0] for lab in labels]
        pos_boxes = [p[i] for p, i in zip(proposals, positive)]
        if self.shared_pool:
            offsets = torch.tensor([0] + [len(p) for p in proposals[:-1]], device=pooled.device).cumsum(0)
            logits = self.mask_head(pooled[torch.cat([i + o for i, o in zip(positive, offsets)])])
        else:
            logits = self.mask_logits(features, pos_boxes, image_size)
        losses["mask"] = mask_loss(logits, pos_boxes, [t["masks"] for t in targets],
                                   [t["labels"].to(logits.device) for t in targets],
                                   [m[i] for m, i in zip(matched_idxs, positive)])
        return [], losses


# --------------------------------------------------------------------------- the detector

class MaskRCNN(FasterRCNNFPN):
    """Faster R-CNN + FPN (:class:`~vislab.detection.two_stage.FasterRCNNFPN`) with the mask
    branch; see the module docstring.  Training returns ``{"loss", "rpn_objectness", "rpn_box",
    "cls", "box", "mask"}``; eval ``[dict(boxes, scores, labels, masks)]`` with ``masks``
    ``(n, H, W)`` float probabilities in the image.

    Args:
        mask_roi_size: the mask branch's RoIAlign bins per side ``S`` (masks are ``2S x 2S``).
        mask_num_convs / mask_chs: the mask head's 3x3 convs and their channels.
        kwargs: every option of :class:`~vislab.detection.two_stage.FasterRCNNFPN`.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, mask_roi_size: int = 7, mask_num_convs: int = 2,
                 mask_chs: int = 64, **kwargs) -> None:
        if mask_roi_size < 1 or mask_num_convs < 0 or mask_chs < 1:
            raise UserError(f"model.kwargs.mask_roi_size ({mask_roi_size}) and mask_chs ({mask_chs}) must be "
                            f"positive and mask_num_convs ({mask_num_convs}) at least 0")
        # read by build_roi_heads, which FasterRCNNFPN.__init__ calls before nn.Module.__init__ has
        # run: a plain (non-module) attribute may be set that early
        self._mask_options = (mask_roi_size, mask_num_convs, mask_chs)
        super().__init__(num_classes, in_chans, **kwargs)

    def build_roi_heads(self, num_classes: int, fpn_chs: int, box_roi_pool: RoIPooler, box_head: nn.Module,
                        box_predictor: nn.Module, **kwargs) -> MaskRoIHeads:
        size, num_convs, chs = self._mask_options
        mask_pool = RoIPooler(size, "align", box_roi_pool.sampling_ratio, box_roi_pool.canonical_size,
                              box_roi_pool.canonical_level)
        return MaskRoIHeads(box_roi_pool, box_head, box_predictor, mask_pool,
                            MaskHead(fpn_chs, num_classes, num_convs, chs), **kwargs)


@register_model(kind="detection")
def mask_rcnn(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
              backbone_kwargs: dict | None = None, strides: tuple[int, ...] = (4, 8, 16), fpn_chs: int = 64,
              anchor_sizes: tuple[float, ...] = (12, 24, 48), aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
              rpn_fg_iou: float = 0.7, rpn_bg_iou: float = 0.3, rpn_batch_size_per_image: int = 256,
              rpn_positive_fraction: float = 0.5, rpn_pre_nms_top_n: tuple[int, int] = (150, 150),
              rpn_post_nms_top_n: tuple[int, int] = (200, 100), rpn_nms_thresh: float = 0.7,
              roi_size: int = 7, sampling_ratio: int = 2, canonical_size: float = 32,
              canonical_level: int = 3, representation_size: int = 256, box_fg_iou: float = 0.5,
              box_bg_iou: float = 0.5, box_batch_size_per_image: int = 64, box_positive_fraction: float = 0.25,
              score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
              mask_roi_size: int = 7, mask_num_convs: int = 2, mask_chs: int = 64) -> MaskRCNN:
    """Mask R-CNN: Faster R-CNN + FPN (P2-P4) and a mask head (2 convs on 7x7 RoIAlign, 14x14 masks)."""
    return MaskRCNN(**locals())


__all__ = ["MaskHead", "MaskRCNN", "MaskRoIHeads", "mask_loss", "mask_rcnn", "paste_masks_in_image",
           "project_masks_on_boxes"]
