"""CenterNet (Zhou et al. 2019, "Objects as Points"): an anchor-free one-stage detector.

An object is the peak of a per-class heatmap at its centre, at output stride ``R`` (the stride of
the finest level in ``strides``, 4 by default), plus a regressed box size and a sub-cell offset
that undoes the rounding of the centre onto the grid.

A registry classifier is the backbone (:class:`~vislab.models.segmentation.BackboneFeatures`, as
RetinaNet); the neck (:class:`UpsampleNeck`) starts from the coarsest stage of ``strides``
(default 16) and, once per finer stage, upsamples x2 (nearest), **adds** a 1x1 conv + BN of that
stage's features (a skip connection, as the FPN's lateral path; adding rather than concatenating
keeps every level at ``neck_chs`` channels) and refines with a 3x3 conv + BN + ReLU.  Three heads,
each a 3x3 conv + ReLU then a 1x1 conv, read the stride-``R`` map: per-class heatmap logits
(``C`` channels, bias ``-log((1 - p) / p)`` with ``p = 0.1`` as the paper), box size ``(w, h)``
and offset ``(dx, dy)``, both in output cells.

Training (the model returns ``{"loss", "heatmap", "size", "offset"}``): per image the targets of
:func:`~vislab.detection.losses.centernet_targets` (a Gaussian per object of the radius of
CornerNet's rule, 1 at the centre cell); the heatmap term is the penalty-reduced focal loss
(:func:`~vislab.detection.losses.heatmap_focal_loss`, alpha 2, beta 4) over the number of centres;
the size and offset terms are L1 at the centre cells, summed over both coordinates and divided
by the number of objects (the paper's ``1/N sum |S_p - s_k|``; its reference code divides by
``2N``); ``loss = heatmap + size_weight * size + offset_weight * offset`` (0.1 and 1 as the paper).
Computed in float32 (autocast safe).

Inference (eval mode returns ``[dict(boxes, scores, labels)]`` per image):
:func:`~vislab.detection.losses.centernet_decode` takes the ``detections_per_img`` best 3x3
max-pool peaks over all classes (no NMS); boxes are clipped to the image and only scores above
``score_thresh`` kept, by decreasing score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.detection.boxes import clip_boxes_to_image
from vislab.detection.losses import (
    centernet_decode,
    centernet_targets,
    heatmap_focal_loss,
)
from vislab.errors import UserError
from vislab.models.layers import ConvNormAct
from vislab.models.registry import register_model
from vislab.models.segmentation import BackboneFeatures

# --------------------------------------------------------------------------- neck and heads


class UpsampleNeck(nn.Module):
    """From the coarsest map up to the finest: ``x = refine_i(up2(x) + skip_i(C_i))``.

    Args:
        in_chs: channels of the backbone maps, finest first (each stride half the next).
        out_chs: channels of every level and of the output (stride of ``in_chs[0]``).
    """

    def __init__(self, in_chs: Sequence[int], out_chs: int, norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.top = ConvNormAct(in_chs[-1], out_chs, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.skip = nn.ModuleList(ConvNormAct(c, out_chs, 1, norm_layer=norm_layer, act_layer=None)
                                  for c in in_chs[:-1])
        self.refine = nn.ModuleList(ConvNormAct(out_chs, out_chs, 3, norm_layer=norm_layer, act_layer=act_layer)
                                    for _ in in_chs[:-1])

    def forward(self, feats: Sequence[Tensor]) -> Tensor:   # [(B, C_i, H_i, W_i)] -> (B, F, H_0, W_0)
        x = self.top(feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            skip = self.skip[i](feats[i])
            x = self.refine[i](F.interpolate(x, size=skip.shape[-2:], mode="nearest") + skip)
        return x


def _head(in_chs: int, head_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chs, head_chs, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(head_chs, out_chs, 1))


class CenterNetHead(nn.Module):
    """Heatmap (``num_classes``), size (2) and offset (2) heads, each 3x3 conv + ReLU + 1x1 conv.

    Args:
        in_chs / head_chs: channels of the neck's output and of each head's hidden layer.
        num_classes: heatmap channels ``C``.
        prior_prob: initial probability of every class at every position.
    """

    def __init__(self, in_chs: int, head_chs: int, num_classes: int, prior_prob: float = 0.1) -> None:
        super().__init__()
        self.heatmap = _head(in_chs, head_chs, num_classes)
        self.size = _head(in_chs, head_chs, 2)
        self.offset = _head(in_chs, head_chs, 2)
        self.init_weights(prior_prob)

    def init_weights(self, prior_prob: float = 0.1) -> None:
        """Gaussian weights (std 0.01), zero biases; the heatmap's last bias makes every sigmoid
        start at ``prior_prob``: ``b = -log((1 - p) / p)``, -2.19 for the paper's ``p = 0.1``."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:   # (B, F, H, W)
        """Heatmap logits ``(B, C, H, W)``, sizes ``(B, 2, H, W)``, offsets ``(B, 2, H, W)``."""
        return self.heatmap(x), self.size(x), self.offset(x)


# --------------------------------------------------------------------------- loss

def centernet_loss(heatmap_logits: Tensor, size: Tensor, offset: Tensor, targets: Sequence[dict[str, Tensor]],
                   stride: float, size_weight: float = 0.1, offset_weight: float = 1.0, alpha: float = 2.0,
                   beta: float = 4.0) -> dict[str, Tensor]:
    """CenterNet's loss of a batch.

    Args:
        heatmap_logits: ``Tensor[B, C, H, W]``; size, offset: ``Tensor[B, 2, H, W]`` in output cells.
        targets: per image ``boxes`` ``Tensor[N, 4]`` (input pixels, xyxy) and ``labels`` ``Tensor[N]``.
        stride: input pixels per output cell.
        size_weight / offset_weight: the paper's lambda_size (0.1) and lambda_off (1).
        alpha / beta: of :func:`heatmap_focal_loss`.

    Returns ``{"loss", "heatmap", "size", "offset"}``; the L1 terms are summed over the objects
    whose centre falls on the grid and their two coordinates, then divided by that number of
    objects (at least 1).  Computed in float32.
    """
    heatmap_logits, size, offset = heatmap_logits.float(), size.float(), offset.float()
    num_classes, height, width = heatmap_logits.shape[1:]
    heat_t, pred_size, pred_off, size_t, off_t = [], [], [], [], []
    for b, t in enumerate(targets):
        tg = centernet_targets(t["boxes"].float().to(size.device), t["labels"].to(size.device), num_classes,
                               (height, width), stride)
        heat_t.append(tg["heatmap"])
        idx = tg["index"][tg["mask"]]
        pred_size.append(size[b].flatten(1)[:, idx].T)                 # (n, 2)
        pred_off.append(offset[b].flatten(1)[:, idx].T)
        size_t.append(tg["size"][tg["mask"]])
        off_t.append(tg["offset"][tg["mask"]])
    heat = heatmap_focal_loss(heatmap_logits, torch.stack(heat_t), alpha, beta)
    num_obj = max(1, sum(len(s) for s in size_t))
    size_l1 = F.l1_loss(torch.cat(pred_size), torch.cat(size_t), reduction="sum") / num_obj
    off_l1 = F.l1_loss(torch.cat(pred_off), torch.cat(off_t), reduction="sum") / num_obj
    return {"loss": heat + size_weight * size_l1 + offset_weight * off_l1, "heatmap": heat, "size": size_l1,
            "offset": off_l1}


# --------------------------------------------------------------------------- the detector

class CenterNet(nn.Module):
    """Backbone + upsampling neck + three heads; see the module docstring.

    Args:
        num_classes / in_chans: object classes (heatmap channels) and input channels.
        backbone / backbone_kwargs: a registry classifier with ``feature_info`` and its arguments.
        strides: the backbone stages the neck reads, finest first; the output stride ``R`` is
            ``strides[0]``, the neck starts from ``strides[-1]``.
        neck_chs / head_chs: channels of the neck and of each head's hidden layer.
        prior_prob: initial heatmap probability (the bias init).
        size_weight / offset_weight / alpha / beta: see :func:`centernet_loss`.
        score_thresh / detections_per_img: inference (``k`` of the top-k peaks).
    """

    def __init__(self, num_classes: int, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, strides: Sequence[int] = (4, 8, 16), neck_chs: int = 64,
                 head_chs: int = 64, prior_prob: float = 0.1, size_weight: float = 0.1, offset_weight: float = 1.0,
                 alpha: float = 2.0, beta: float = 4.0, score_thresh: float = 0.05,
                 detections_per_img: int = 100) -> None:
        super().__init__()
        if not 0 < prior_prob < 1:
            raise UserError(f"model.kwargs.prior_prob must lie in (0, 1), got {prior_prob}")
        if detections_per_img < 1:
            raise UserError(f"model.kwargs.detections_per_img must be at least 1, got {detections_per_img}")
        if list(strides) != sorted(set(strides)):
            raise UserError(f"model.kwargs.strides {list(strides)} must increase, finest (the output stride) first")
        self.num_classes = num_classes
        self.backbone = BackboneFeatures(backbone, in_chans, **(backbone_kwargs or {}))
        self.stage_ids = self.backbone.stages_at(strides, backbone)
        self.stride = strides[0]
        self.neck = UpsampleNeck([self.backbone.channels[i] for i in self.stage_ids], neck_chs)
        self.head = CenterNetHead(neck_chs, head_chs, num_classes, prior_prob)
        self.loss_kwargs = {"size_weight": size_weight, "offset_weight": offset_weight, "alpha": alpha, "beta": beta}
        self.score_thresh, self.detections_per_img = score_thresh, detections_per_img

    def features(self, images: Tensor) -> Tensor:
        """The neck's output ``(B, neck_chs, H / R, W / R)``."""
        stages = self.backbone(images)
        return self.neck([stages[i] for i in self.stage_ids])

    def forward(self, images: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: the loss dict (``targets`` required); eval: detections per image."""
        heatmap, size, offset = self.head(self.features(images))
        if self.training:
            if targets is None:
                raise ValueError("CenterNet in training mode needs targets (a dict of boxes and labels per image)")
            return centernet_loss(heatmap, size, offset, targets, self.stride, **self.loss_kwargs)
        return self.postprocess(heatmap, size, offset, tuple(images.shape[-2:]))

    @torch.no_grad()
    def postprocess(self, heatmap: Tensor, size: Tensor, offset: Tensor, image_size: tuple[int, int]
                    ) -> list[dict[str, Tensor]]:
        """The ``detections_per_img`` best peaks (no NMS), clipped to ``image_size``, scoring above
        ``score_thresh``, by decreasing score."""
        dets = centernet_decode(heatmap.float(), size.float(), offset.float(), self.stride, self.detections_per_img)
        out = []
        for d in dets:
            keep = d["scores"] > self.score_thresh
            out.append({"boxes": clip_boxes_to_image(d["boxes"][keep], image_size), "scores": d["scores"][keep],
                        "labels": d["labels"][keep]})
        return out


@register_model(kind="detection")
def centernet(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
              backbone_kwargs: dict | None = None, strides: tuple[int, ...] = (4, 8, 16), neck_chs: int = 64,
              head_chs: int = 64, prior_prob: float = 0.1, size_weight: float = 0.1, offset_weight: float = 1.0,
              alpha: float = 2.0, beta: float = 4.0, score_thresh: float = 0.05,
              detections_per_img: int = 100) -> CenterNet:
    """CenterNet: output stride 4 from the stride 4/8/16 stages (sized for 64-96 px scenes),
    heatmap + size + offset heads, max-pool peaks without NMS."""
    return CenterNet(num_classes, in_chans, backbone, backbone_kwargs, tuple(strides), neck_chs, head_chs,
                     prior_prob, size_weight, offset_weight, alpha, beta, score_thresh, detections_per_img)


__all__ = ["CenterNet", "CenterNetHead", "UpsampleNeck", "centernet", "centernet_loss"]
