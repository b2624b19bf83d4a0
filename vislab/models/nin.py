"""Network in Network (Lin, Chen & Yan 2014).

Two ideas that every later CNN kept:

* mlpconv layers: a conv followed by two 1x1 convs (with ReLU), i.e. a small MLP slid over the
  image, which is a stronger local function approximator than one linear filter; the 1x1 conv
  is born here (GoogLeNet's bottlenecks, ResNet's, MobileNet's pointwise convs).
* global average pooling instead of FC layers: the last mlpconv outputs one map per class and
  their spatial means are the scores.  No parameters, less overfitting, any input size, and a
  direct map -> class link (which CAM later exploits).  The class maps keep the ReLU that
  follows every layer of the authors' Caffe models.

``small_input=True`` (the default) is the paper's CIFAR-10 network (three mlpconvs, max- then
average-pooling, dropout 0.5); ``small_input=False`` the authors' ImageNet model (four mlpconvs,
an 11x11/4 stem conv).
"""

from __future__ import annotations

from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier
from vislab.models.layers import init_weights, make_divisible
from vislab.models.registry import register_model

# Per mlpconv: (kernel, stride, padding, channels, pool after it, dropout after it).  The last
# one lists two channel counts: its third layer is the class-map head.
NIN_CONFIGS: dict[str, list[tuple[int, int, int, tuple[int, ...], str | None, float]]] = {
    "cifar": [(5, 1, 2, (192, 160, 96), "max", 0.5),
              (5, 1, 2, (192, 192, 192), "avg", 0.5),
              (3, 1, 1, (192, 192), None, 0.0)],
    "imagenet": [(11, 4, 0, (96, 96, 96), "max", 0.0),
                 (5, 1, 2, (256, 256, 256), "max", 0.0),
                 (3, 1, 1, (384, 384, 384), "max", 0.5),
                 (3, 1, 1, (1024, 1024), None, 0.0)],
}


def mlpconv(in_chs: int, chs: tuple[int, ...], kernel_size: int, stride: int = 1,
            padding: int = 0) -> nn.Sequential:
    """A kxk conv, then 1x1 convs, each followed by ReLU: an MLP shared over positions."""
    layers: list[nn.Module] = []
    for i, c in enumerate(chs):
        layers += [nn.Conv2d(in_chs, c, kernel_size if i == 0 else 1, stride if i == 0 else 1,
                             padding if i == 0 else 0), nn.ReLU(inplace=True)]
        in_chs = c
    return nn.Sequential(*layers)


class NiN(Classifier):
    """mlpconv stages with pooling and dropout; the head is a 1x1 conv to one ReLU map per
    class, averaged over the image.

    Args:
        num_classes / in_chans: classes and input channels.
        small_input: the CIFAR network (True) or the ImageNet one (False).
        width_mult: scales every mlpconv's channels (rounded to multiples of 8); 1 is the paper's.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
                 width_mult: float = 1.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise UserError(f"width_mult must be positive (1 is the paper's NiN), got {width_mult}")
        in_chs, reduction, stages, self.feature_info = in_chans, 1, [], []
        for i, (k, s, p, chs, pool, drop) in enumerate(NIN_CONFIGS["cifar" if small_input else "imagenet"]):
            chs = tuple(make_divisible(c * width_mult) for c in chs)
            layers: list[nn.Module] = [mlpconv(in_chs, chs, k, s, p)]
            reduction *= s
            if pool is not None:
                layers.append((nn.MaxPool2d if pool == "max" else nn.AvgPool2d)(3, 2, ceil_mode=True))
                reduction *= 2
            if drop:
                layers.append(nn.Dropout(drop))
            stages.append(nn.Sequential(*layers))
            in_chs = chs[-1]
            self.feature_info.append(dict(module=f"stages.{i}", num_chs=in_chs, reduction=reduction))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs
        self.reset_classifier(num_classes)
        init_weights(self, "he")

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh 1x1 class-map conv with ReLU (0: no head, ``forward_head`` pools only)."""
        self.num_classes = num_classes
        self.head = (nn.Sequential(nn.Conv2d(self.num_features, num_classes, 1), nn.ReLU(inplace=True))
                     if num_classes > 0 else nn.Identity())

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, 32, 32) -> (B, 192, 8, 8)
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if pre_logits:
            return x.mean(dim=(2, 3))                      # (B, 192)
        return self.head(x).mean(dim=(2, 3))               # class maps -> (B, num_classes)


@register_model
def nin(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
        width_mult: float = 1.0) -> NiN:
    """Network in Network: the CIFAR-10 model (0.97 M parameters); ``small_input=False``: ImageNet."""
    return NiN(num_classes, in_chans, small_input, width_mult)


__all__ = ["NIN_CONFIGS", "NiN", "mlpconv"]
