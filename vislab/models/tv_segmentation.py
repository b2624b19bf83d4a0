"""torchvision's segmentation models on a vislab backbone: the reference that vislab's FCN and
DeepLab are measured against, trained by the same engine on the same data.

``tv_deeplabv3`` is torchvision's ``DeepLabV3`` class with its ``ASPP`` and the layers of its
``DeepLabHead`` (ASPP -> 3x3 conv-BN-ReLU -> 1x1 conv; torchvision fixes the head's width at 256,
here ``aspp_chs`` so that both sides of a comparison have the same width); ``tv_fcn`` is its
``FCN`` class with its ``FCNHead``, on a dilated backbone as ``fcn_resnet50`` (output stride 8).
Both return the ``"out"`` map of torchvision's output dict (no auxiliary head).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3
from torchvision.models.segmentation.fcn import FCN, FCNHead

from vislab.models.registry import register_model
from vislab.models.segmentation import BackboneFeatures


class _LastStage(nn.Module):
    """A :class:`BackboneFeatures` speaking torchvision's backbone contract: ``{"out": map}``."""

    def __init__(self, features: BackboneFeatures) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict(out=self.features(x)[-1])


class TorchvisionSegmentation(nn.Module):
    """torchvision's ``DeepLabV3`` or ``FCN`` model around a registry backbone's last stage."""

    def __init__(self, head: str, num_classes: int, in_chans: int, backbone: str, backbone_kwargs: dict | None,
                 output_stride: int, rates: list[int], aspp_chs: int) -> None:
        super().__init__()
        feats = BackboneFeatures(backbone, in_chans, stages=[-1], output_stride=output_stride,
                                 **(backbone_kwargs or {}))
        c = feats.channels[-1]
        if head == "deeplabv3":
            classifier = nn.Sequential(ASPP(c, list(rates), aspp_chs), nn.Conv2d(aspp_chs, aspp_chs, 3, padding=1, bias=False),
                                       nn.BatchNorm2d(aspp_chs), nn.ReLU(), nn.Conv2d(aspp_chs, num_classes, 1))
            self.net: nn.Module = DeepLabV3(_LastStage(feats), classifier)
        else:
            self.net = FCN(_LastStage(feats), FCNHead(c, num_classes))
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)["out"]


@register_model(kind="segmentation")
def tv_deeplabv3(num_classes: int = 21, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, output_stride: int = 16, rates: list[int] | None = None,
                 aspp_chs: int = 256) -> TorchvisionSegmentation:
    """torchvision's DeepLabV3 + ASPP (rates default to its 12, 24, 36) on a vislab backbone."""
    return TorchvisionSegmentation("deeplabv3", num_classes, in_chans, backbone, backbone_kwargs, output_stride,
                                   rates or [12, 24, 36], aspp_chs)


@register_model(kind="segmentation")
def tv_fcn(num_classes: int = 21, in_chans: int = 3, backbone: str = "resnet18",
           backbone_kwargs: dict | None = None, output_stride: int = 8) -> TorchvisionSegmentation:
    """torchvision's FCN + FCNHead (fcn_resnet50's design: dilated backbone) on a vislab backbone."""
    return TorchvisionSegmentation("fcn", num_classes, in_chans, backbone, backbone_kwargs, output_stride, [], 0)


__all__ = ["TorchvisionSegmentation"]
