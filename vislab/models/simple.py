"""The first classifiers of the notes: the linear classifier (one template per class), an MLP,
and the small CNN that is vislab's default recipe."""

from __future__ import annotations

from torch import Tensor, nn

from vislab.models.base import Classifier
from vislab.models.layers import ConvNormAct, init_weights
from vislab.models.registry import register_model


class LinearClassifier(Classifier):
    """Scores ``s = W x + b`` on the flattened image: each row of ``W`` is a class template.

    Args:
        num_classes / in_chans: output classes and input channels.
        img_size: input side length (the flattened size fixes the weight shape).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 28) -> None:
        super().__init__()
        self.img_shape = (in_chans, img_size, img_size)
        self.num_classes = num_classes
        self.num_features = in_chans * img_size * img_size
        self.feature_info = []
        self.head = nn.Linear(self.num_features, num_classes)
        init_weights(self, "xavier")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, C*H*W)
        return x.flatten(1)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x if pre_logits else self.head(x)

    def templates(self) -> Tensor:
        """The weight rows reshaped to images: ``(num_classes, C, H, W)``."""
        return self.head.weight.detach().reshape(-1, *self.img_shape)


class MLP(Classifier):
    """Fully connected network: flatten, ``depth`` hidden layers of ``width`` with ReLU and dropout."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 28,
                 width: int = 512, depth: int = 2, drop: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        dim = in_chans * img_size * img_size
        for _ in range(depth):
            layers += [nn.Linear(dim, width), nn.ReLU(inplace=True), nn.Dropout(drop)]
            dim = width
        self.body = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.num_features = dim
        self.feature_info = []
        self.head = nn.Linear(dim, num_classes)
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x if pre_logits else self.head(x)


class SmallCNN(Classifier):
    """The default recipe's network: three conv stages (two 3x3 conv-BN-ReLU each, max-pool
    between), global average pooling and a linear head.  About 73 k parameters; the default
    recipe (6 epochs) reaches 92.3% on Fashion-MNIST in about 110 s of training on two CPU cores
    (measured sgemm 326 GFLOP/s; ``benchmarks/bench_recipe.py``).

    Args:
        widths: channels of the three stages.
        drop: dropout before the classifier.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1,
                 widths: tuple[int, int, int] = (16, 32, 64), drop: float = 0.0) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.stem = ConvNormAct(in_chans, c1, 3)
        self.stages = nn.Sequential(
            nn.Sequential(ConvNormAct(c1, c1, 3), nn.MaxPool2d(2)),                    # H/2
            nn.Sequential(ConvNormAct(c1, c2, 3), ConvNormAct(c2, c2, 3), nn.MaxPool2d(2)),  # H/4
            nn.Sequential(ConvNormAct(c2, c3, 3), ConvNormAct(c3, c3, 3)),             # H/4
        )
        self.num_classes = num_classes
        self.num_features = c3
        self.head_drop = drop
        self.feature_info = [dict(module=f"stages.{i}", num_chs=c, reduction=r)
                             for i, (c, r) in enumerate([(c1, 2), (c2, 4), (c3, 4)])]
        self.head = nn.Linear(c3, num_classes)
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, c3, H/4, W/4)
        return self.stages(self.stem(x))


@register_model
def linear(num_classes: int = 10, in_chans: int = 1, img_size: int = 28) -> LinearClassifier:
    """Linear classifier (softmax regression) on raw pixels."""
    return LinearClassifier(num_classes, in_chans, img_size)


@register_model
def mlp(num_classes: int = 10, in_chans: int = 1, img_size: int = 28, width: int = 512,
        depth: int = 2, drop: float = 0.2) -> MLP:
    """Two-hidden-layer perceptron."""
    return MLP(num_classes, in_chans, img_size, width, depth, drop)


@register_model
def small_cnn(num_classes: int = 10, in_chans: int = 1, widths: tuple[int, int, int] = (16, 32, 64),
              drop: float = 0.0) -> SmallCNN:
    """Default recipe: six 3x3 conv-BN-ReLU layers, two max-pools, GAP, linear."""
    return SmallCNN(num_classes, in_chans, tuple(widths), drop)


__all__ = ["LinearClassifier", "MLP", "SmallCNN"]
