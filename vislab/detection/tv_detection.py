"""torchvision's one-stage detectors on a vislab backbone: the references that vislab's RetinaNet
and SSD are measured against, trained by the same engine on the same scenes
(``benchmarks/bench_detectors.py``), as :mod:`vislab.models.tv_segmentation` is for segmentation.

``tv_retinanet`` is torchvision's ``RetinaNet`` class (its head, anchors, matching, loss and
postprocessing) and ``tv_ssd`` its ``SSD`` class, each on a registry backbone with vislab's own
neck (the FPN of :mod:`vislab.detection.retinanet`, the extra layers of :mod:`vislab.detection.ssd`)
so that both sides of a comparison share the features.  Their transform is set to change nothing
(the scenes come normalised and at their size; torchvision still runs a resize at scale 1).
:class:`TorchvisionDetector` gives them vislab's detection face.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torchvision.models.detection as tvd
from torch import Tensor, nn

from vislab.detection.retinanet import FPN
from vislab.detection.ssd import DEFAULT_ASPECT_RATIOS, ExtraLayers
from vislab.models.registry import register_model
from vislab.models.segmentation import BackboneFeatures


class _Features(nn.Module):
    """A registry backbone's stages of ``strides`` through ``neck`` (vislab's FPN or SSD's extra
    layers), speaking torchvision's backbone contract: an ``OrderedDict`` of maps, ``out_channels``."""

    def __init__(self, backbone: BackboneFeatures, strides: Sequence[int], neck: str, neck_chs) -> None:
        super().__init__()
        self.backbone = backbone
        self.stage_ids = backbone.stages_at(strides)      # backbone strides only: no extra FPN levels here
        in_chs = [backbone.channels[i] for i in self.stage_ids]
        if neck == "fpn":
            self.neck: nn.Module = FPN(in_chs, neck_chs)
            self.out_channels: int | list[int] = neck_chs
        else:
            self.neck = ExtraLayers(in_chs[-1], neck_chs)
            self.out_channels = in_chs + list(neck_chs)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        stages = self.backbone(x)
        maps = [stages[i] for i in self.stage_ids]
        maps = self.neck(maps) if isinstance(self.neck, FPN) else maps + self.neck(maps[-1])
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


class TorchvisionDetector(nn.Module):
    """torchvision's detector ``net`` with vislab's detection face: a batch tensor in, the loss dict
    ``{"loss", "cls", "box"}`` in training, ``[dict(boxes, scores, labels)]`` (labels ``0..C-1``)
    in eval.  ``label_offset`` is 1 where torchvision's class 0 is the background (SSD)."""

    def __init__(self, net: nn.Module, num_classes: int, label_offset: int) -> None:
        super().__init__()
        self.net, self.num_classes, self.label_offset = net, num_classes, label_offset

    def forward(self, images: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("a detector in training mode needs targets (a dict of boxes and labels per image)")
            losses = self.net(list(images), [{"boxes": t["boxes"], "labels": t["labels"] + self.label_offset}
                                             for t in targets])
            cls, box = losses["classification"], losses["bbox_regression"]
            return {"loss": cls + box, "cls": cls, "box": box}
        return [{**d, "labels": d["labels"] - self.label_offset} for d in self.net(list(images))]


def _identity_transform(net: nn.Module, image_size: int) -> None:
    """torchvision's transform set to change nothing: the scenes come normalised and at their size."""
    net.transform.min_size, net.transform.max_size = (image_size,), image_size
    net.transform.image_mean, net.transform.image_std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]


@register_model(kind="detection")
def tv_retinanet(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, strides: tuple[int, ...] = (4, 8, 16), fpn_chs: int = 64,
                 num_convs: int = 2, anchor_sizes: tuple[float, ...] = (12, 24, 48), scales_per_octave: int = 3,
                 aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0), fg_iou: float = 0.5, bg_iou: float = 0.4,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, topk_candidates: int = 1000,
                 detections_per_img: int = 100, image_size: int = 64) -> TorchvisionDetector:
    """torchvision's ``RetinaNet`` (head, anchors, matching, loss, postprocessing) on a registry
    backbone + vislab's FPN; its subnets cut to ``num_convs`` conv + ReLU layers."""
    feats = _Features(BackboneFeatures(backbone, in_chans, **(backbone_kwargs or {})), strides, "fpn", fpn_chs)
    sizes = tuple(tuple(s * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)) for s in anchor_sizes)
    anchors = tvd.anchor_utils.AnchorGenerator(sizes, (tuple(aspect_ratios),) * len(sizes))
    head = tvd.retinanet.RetinaNetHead(fpn_chs, anchors.num_anchors_per_location()[0], num_classes)
    head.classification_head.conv = head.classification_head.conv[:num_convs]
    head.regression_head.conv = head.regression_head.conv[:num_convs]
    net = tvd.retinanet.RetinaNet(feats, num_classes, min_size=image_size, max_size=image_size,
                                  anchor_generator=anchors, head=head, score_thresh=score_thresh,
                                  nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                                  fg_iou_thresh=fg_iou, bg_iou_thresh=bg_iou, topk_candidates=topk_candidates)
    _identity_transform(net, image_size)
    return TorchvisionDetector(net, num_classes, 0)

@register_model(kind="detection")
def tv_ssd(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18", backbone_kwargs: dict | None = None,
           strides: tuple[int, ...] = (4, 8, 16), extra_chs: tuple[int, ...] = (128, 128),
           aspect_ratios: tuple[tuple[float, ...], ...] = DEFAULT_ASPECT_RATIOS, min_ratio: float = 0.25,
           max_ratio: float = 0.9, iou_thresh: float = 0.5, neg_pos_ratio: float = 3.0, score_thresh: float = 0.05,
           nms_thresh: float = 0.5, topk_candidates: int = 400, detections_per_img: int = 100,
           image_size: int = 64) -> TorchvisionDetector:
    """torchvision's ``SSD`` (head, default boxes, matching, loss, postprocessing) on a registry
    backbone + vislab's extra layers; class 0 is torchvision's background."""
    feats = _Features(BackboneFeatures(backbone, in_chans, **(backbone_kwargs or {})), strides, "extra",
                      list(extra_chs))
    boxes = tvd.anchor_utils.DefaultBoxGenerator([list(r) for r in aspect_ratios], min_ratio, max_ratio)
    net = tvd.ssd.SSD(feats, boxes, (image_size, image_size), num_classes + 1, image_mean=[0.0] * 3,
                      image_std=[1.0] * 3, score_thresh=score_thresh, nms_thresh=nms_thresh,
                      detections_per_img=detections_per_img, iou_thresh=iou_thresh,
                      topk_candidates=topk_candidates, positive_fraction=1 / (1 + neg_pos_ratio))
    _identity_transform(net, image_size)
    return TorchvisionDetector(net, num_classes, 1)
