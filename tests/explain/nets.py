"""Small hand-built networks whose maps and gradients are known in closed form."""

import torch
from torch import Tensor, nn

from vislab.models.base import Classifier


class IdentityFeatures(Classifier):
    """``forward_features`` is the identity, so the input *is* the feature map; the head is the
    base class's global average pooling + linear layer."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.num_features = weight.shape[1]
        self.feature_info = [dict(module="features", num_chs=weight.shape[1], reduction=1)]
        self.features = nn.Identity()
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


def gap_cnn(in_chans: int = 3, width: int = 6, num_classes: int = 4, seed: int = 0) -> nn.Sequential:
    """A plain module: conv-BN-ReLU x2, global average pooling, one linear layer."""
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(in_chans, width, 3, padding=1))
    net.add_module("bn1", nn.BatchNorm2d(width))
    net.add_module("relu1", nn.ReLU(inplace=True))
    net.add_module("conv2", nn.Conv2d(width, width, 3, padding=1, stride=2))
    net.add_module("relu2", nn.ReLU(inplace=True))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(width, num_classes))
    return net.eval()
