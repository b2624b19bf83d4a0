"""A window classifier for sliding-window detection (the notes' OverFeat discussion, in small):
unpadded 3x3 convolutions with batch norm and two max-pools, then fully connected layers over
the small map that a fixed-size window leaves.  Because no convolution pads and the head is
``Flatten`` + ``Linear`` layers, the classifier can be convolutionalised
(:func:`vislab.analysis.convolutionalise`): on a larger image it then scores every window, every
``stride`` pixels, in one pass (:mod:`vislab.detection.sliding_window`).
"""

from __future__ import annotations

from torch import Tensor, nn

from vislab.models.base import Classifier
from vislab.models.layers import ConvNormAct, init_weights
from vislab.models.registry import register_model


class WindowCNN(Classifier):
    """A small classifier of fixed-size windows whose head can be convolutionalised:
    unpadded 3x3 conv-BN-ReLU layers, two max-pools (total stride 4), then fully connected
    layers over the ``3 x 3`` map that a 32x32 window leaves (OverFeat's design, in small).

    An adaptive average pool to that map size lets the classifier take other input sizes; at the
    window size it is the identity, and :meth:`as_sequential` leaves it out.

    Args:
        num_classes / in_chans: classes (background included) and input channels.
        img_size: the window side (32: a 3x3 map before the head).
        widths: channels of the three stages.
        hidden: width of the hidden fully connected layer.
        drop: dropout before the classifier.
    """

    stride = 4

    def __init__(self, num_classes: int = 11, in_chans: int = 3, img_size: int = 32,
                 widths: tuple[int, int, int] = (16, 32, 64), hidden: int = 128, drop: float = 0.2) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.stages = nn.Sequential(
            nn.Sequential(ConvNormAct(in_chans, c1, 3, padding=0), ConvNormAct(c1, c1, 3, padding=0),
                          nn.MaxPool2d(2)),                                   # (S - 4) / 2
            nn.Sequential(ConvNormAct(c1, c2, 3, padding=0), ConvNormAct(c2, c2, 3, padding=0),
                          nn.MaxPool2d(2)),                                   # ((S - 4) / 2 - 4) / 2
            ConvNormAct(c2, c3, 3, padding=0),                                # ... - 2
        )
        side = ((img_size - 4) // 2 - 4) // 2 - 2
        if side < 1:
            raise ValueError(f"WindowCNN needs windows of at least 24 pixels, got {img_size}")
        self.pool = nn.AdaptiveAvgPool2d(side)
        self.pre_logits = nn.Sequential(nn.Flatten(), nn.Linear(c3 * side * side, hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(drop))
        self.num_classes = num_classes
        self.num_features = hidden
        self.img_size = img_size
        self.feature_info = [dict(module=f"stages.{i}", num_chs=c, reduction=r)
                             for i, (c, r) in enumerate([(c1, 2), (c2, 4), (c3, 8)])]
        self.head = nn.Linear(hidden, num_classes)
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, S, S) -> (B, c3, S/4 - 7, S/4 - 7)
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pre_logits(self.pool(x))               # (B, c3, 3, 3) -> (B, hidden)
        return x if pre_logits else self.head(x)

    def as_sequential(self) -> nn.Sequential:
        """The same layers (shared, not copied) as ``Sequential(convs..., Flatten, Linear...)``,
        the form :func:`vislab.analysis.convolutionalise` takes."""
        return nn.Sequential(*self.stages, *self.pre_logits, self.head)


@register_model
def window_cnn(num_classes: int = 11, in_chans: int = 3, img_size: int = 32,
               widths: tuple[int, int, int] = (16, 32, 64), hidden: int = 128, drop: float = 0.2) -> WindowCNN:
    """Window classifier for sliding-window detection: unpadded convs, stride 4, FC head."""
    return WindowCNN(num_classes, in_chans, img_size, tuple(widths), hidden, drop)


__all__ = ["WindowCNN"]
