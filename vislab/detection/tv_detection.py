"""torchvision's detectors on a vislab backbone: the references that vislab's RetinaNet, SSD,
Faster R-CNN and Mask R-CNN are measured against, trained by the same engine on the same scenes
(``benchmarks/bench_detectors.py``), as :mod:`vislab.models.tv_segmentation` is for segmentation.

``tv_retinanet`` is torchvision's ``RetinaNet`` class (its head, anchors, matching, loss and
postprocessing), ``tv_ssd`` its ``SSD`` class, and ``tv_faster_rcnn`` / ``tv_mask_rcnn`` its
``FasterRCNN`` / ``MaskRCNN`` classes (the references of :mod:`vislab.detection.two_stage`'s
Faster R-CNN + FPN and of vislab's Mask R-CNN), each on a registry backbone with vislab's own
neck (the FPN of :mod:`vislab.detection.retinanet`, the extra layers of :mod:`vislab.detection.ssd`)
so that both sides of a comparison share the features.  Their transform is set to change nothing
(the scenes come normalised and at their size; torchvision still runs a resize at scale 1).
:class:`TorchvisionDetector` gives them vislab's detection face.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
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


RCNN_LOSS_NAMES = {"loss_objectness": "rpn_objectness", "loss_rpn_box_reg": "rpn_box", "loss_classifier": "cls",
                   "loss_box_reg": "box", "loss_mask": "mask"}


class TorchvisionRCNN(TorchvisionDetector):
    """torchvision's ``FasterRCNN`` / ``MaskRCNN`` with vislab's detection face.  Training: the
    targets' labels ``0..C-1`` become torchvision's ``1..C`` (0 its background), ``masks`` are
    passed on to a ``MaskRCNN``, and the losses come back under vislab's names (``rpn_objectness``,
    ``rpn_box``, ``cls``, ``box``, ``mask``) with ``loss`` their sum.  Eval: labels ``0..C-1``
    again; a ``MaskRCNN``'s ``masks`` as ``(n, H, W)`` float probabilities pasted in the image
    (torchvision's ``(n, 1, H, W)`` squeezed), as vislab's Mask R-CNN returns them."""

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__(net, num_classes, 1)
        self.with_masks = isinstance(net, tvd.MaskRCNN)

    def forward(self, images: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("a detector in training mode needs targets (a dict of boxes and labels per image)")
            keys = ("boxes", "labels", "masks") if self.with_masks else ("boxes", "labels")
            tv_targets = [{k: t[k] + 1 if k == "labels" else t[k].to(torch.uint8) if k == "masks" else t[k]
                           for k in keys} for t in targets]
            losses = {RCNN_LOSS_NAMES[k]: v for k, v in self.net(list(images), tv_targets).items()}
            return {"loss": sum(losses.values()), **losses}
        out = []
        for d in self.net(list(images)):
            d = {**d, "labels": d["labels"] - 1}
            if "masks" in d:
                d["masks"] = d["masks"][:, 0]
            out.append(d)
        return out


def _tv_rcnn(num_classes: int, in_chans: int, backbone: str, backbone_kwargs: dict | None, strides: Sequence[int],
             fpn_chs: int, anchor_sizes: Sequence[float], aspect_ratios: Sequence[float], rpn_fg_iou: float,
             rpn_bg_iou: float, rpn_batch_size_per_image: int, rpn_positive_fraction: float,
             rpn_pre_nms_top_n: Sequence[int], rpn_post_nms_top_n: Sequence[int], rpn_nms_thresh: float,
             roi_size: int, sampling_ratio: int, canonical_size: float, canonical_level: int,
             representation_size: int, box_fg_iou: float, box_bg_iou: float, box_batch_size_per_image: int,
             box_positive_fraction: float, score_thresh: float, nms_thresh: float, detections_per_img: int,
             image_size: int, mask_layers: Sequence[int] | None = None, mask_roi_size: int = 14) -> TorchvisionRCNN:
    """torchvision's ``FasterRCNN`` (``mask_layers`` None) or ``MaskRCNN`` on a registry backbone +
    vislab's FPN, with the anchors, thresholds, sizes and level rule of vislab's ``faster_rcnn_fpn``."""
    from torchvision.ops import MultiScaleRoIAlign
    feats = _Features(BackboneFeatures(backbone, in_chans, **(backbone_kwargs or {})), strides, "fpn", fpn_chs)
    names = [str(i) for i in range(len(strides))]
    anchors = tvd.anchor_utils.AnchorGenerator(tuple((float(s),) for s in anchor_sizes),
                                               (tuple(aspect_ratios),) * len(anchor_sizes))

    def pooler(size: int) -> MultiScaleRoIAlign:
        return MultiScaleRoIAlign(names, size, sampling_ratio, canonical_scale=int(canonical_size),
                                  canonical_level=canonical_level)

    kwargs = {
        "min_size": image_size, "max_size": image_size, "rpn_anchor_generator": anchors,
        "rpn_head": tvd.rpn.RPNHead(fpn_chs, len(aspect_ratios)),
        "rpn_pre_nms_top_n_train": rpn_pre_nms_top_n[0], "rpn_pre_nms_top_n_test": rpn_pre_nms_top_n[1],
        "rpn_post_nms_top_n_train": rpn_post_nms_top_n[0], "rpn_post_nms_top_n_test": rpn_post_nms_top_n[1],
        "rpn_nms_thresh": rpn_nms_thresh, "rpn_fg_iou_thresh": rpn_fg_iou, "rpn_bg_iou_thresh": rpn_bg_iou,
        "rpn_batch_size_per_image": rpn_batch_size_per_image, "rpn_positive_fraction": rpn_positive_fraction,
        "box_roi_pool": pooler(roi_size), "box_head": tvd.faster_rcnn.TwoMLPHead(fpn_chs * roi_size ** 2, representation_size),
        "box_predictor": tvd.faster_rcnn.FastRCNNPredictor(representation_size, num_classes + 1),
        "box_score_thresh": score_thresh, "box_nms_thresh": nms_thresh, "box_detections_per_img": detections_per_img,
        "box_fg_iou_thresh": box_fg_iou, "box_bg_iou_thresh": box_bg_iou, "box_batch_size_per_image": box_batch_size_per_image,
        "box_positive_fraction": box_positive_fraction}
    if mask_layers is None:
        net = tvd.FasterRCNN(feats, **kwargs)
    else:
        net = tvd.MaskRCNN(feats, mask_roi_pool=pooler(mask_roi_size),
                           mask_head=tvd.mask_rcnn.MaskRCNNHeads(fpn_chs, list(mask_layers), 1),
                           mask_predictor=tvd.mask_rcnn.MaskRCNNPredictor(mask_layers[-1], mask_layers[-1],
                                                                          num_classes + 1), **kwargs)
    _identity_transform(net, image_size)
    return TorchvisionRCNN(net, num_classes)


@register_model(kind="detection")
def tv_faster_rcnn(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
                   backbone_kwargs: dict | None = None, strides: tuple[int, ...] = (4, 8, 16), fpn_chs: int = 64,
                   anchor_sizes: tuple[float, ...] = (12, 24, 48), aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                   rpn_fg_iou: float = 0.7, rpn_bg_iou: float = 0.3, rpn_batch_size_per_image: int = 256,
                   rpn_positive_fraction: float = 0.5, rpn_pre_nms_top_n: tuple[int, int] = (150, 150),
                   rpn_post_nms_top_n: tuple[int, int] = (200, 100), rpn_nms_thresh: float = 0.7,
                   roi_size: int = 7, sampling_ratio: int = 2, canonical_size: float = 32,
                   canonical_level: int = 3, representation_size: int = 256, box_fg_iou: float = 0.5,
                   box_bg_iou: float = 0.5, box_batch_size_per_image: int = 64, box_positive_fraction: float = 0.25,
                   score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                   image_size: int = 64) -> TorchvisionRCNN:
    """torchvision's ``FasterRCNN`` (RPN, RoI heads, losses, postprocessing) on a registry backbone
    + vislab's FPN, set up as vislab's ``faster_rcnn_fpn`` (P2-P4, one anchor size per level,
    RoIAlign 7x7 by the canonical-32-px-at-P3 rule); its own initialisation of the heads."""
    return _tv_rcnn(**locals())


@register_model(kind="detection")
def tv_mask_rcnn(num_classes: int = 10, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, strides: tuple[int, ...] = (4, 8, 16), fpn_chs: int = 64,
                 anchor_sizes: tuple[float, ...] = (12, 24, 48), aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                 rpn_fg_iou: float = 0.7, rpn_bg_iou: float = 0.3, rpn_batch_size_per_image: int = 256,
                 rpn_positive_fraction: float = 0.5, rpn_pre_nms_top_n: tuple[int, int] = (150, 150),
                 rpn_post_nms_top_n: tuple[int, int] = (200, 100), rpn_nms_thresh: float = 0.7,
                 roi_size: int = 7, sampling_ratio: int = 2, canonical_size: float = 32,
                 canonical_level: int = 3, representation_size: int = 256, box_fg_iou: float = 0.5,
                 box_bg_iou: float = 0.5, box_batch_size_per_image: int = 64, box_positive_fraction: float = 0.25,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 image_size: int = 64, mask_roi_size: int = 7, mask_num_convs: int = 2,
                 mask_chs: int = 64) -> TorchvisionRCNN:
    """torchvision's ``MaskRCNN`` as :func:`tv_faster_rcnn` plus its mask branch, set up as vislab's
    ``mask_rcnn``: RoIAlign ``mask_roi_size`` from the same levels, ``mask_num_convs`` 3x3 conv +
    ReLU of ``mask_chs`` channels, a 2x2 transposed conv and per-class mask logits (the paper's
    4 x 256 layers on 14x14 is ``mask_roi_size=14, mask_num_convs=4, mask_chs=256``); eval
    ``masks`` ``(n, H, W)`` probabilities."""
    kwargs = dict(locals())
    layers = (kwargs.pop("mask_chs"),) * kwargs.pop("mask_num_convs")
    return _tv_rcnn(**kwargs, mask_layers=layers)
