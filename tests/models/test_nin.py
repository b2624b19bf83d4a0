"""Network in Network against Lin et al. 2014 (the authors' CIFAR-10 and ImageNet Caffe models)."""

import torch
import torch.nn.functional as F

from vislab.models import create_model


def _mlpconv_params(c_in: int, chs: tuple[int, ...], k: int) -> int:
    """A kxk conv then 1x1 convs, all with biases."""
    total = 0
    for i, c in enumerate(chs):
        total += c * c_in * (k * k if i == 0 else 1) + c
        c_in = c
    return total


def test_parameter_counts_by_hand():
    cifar = _mlpconv_params(3, (192, 160, 96), 5) + _mlpconv_params(96, (192, 192, 192), 5) \
        + _mlpconv_params(192, (192, 192, 10), 3)
    imagenet = _mlpconv_params(3, (96, 96, 96), 11) + _mlpconv_params(96, (256, 256, 256), 5) \
        + _mlpconv_params(256, (384, 384, 384), 3) + _mlpconv_params(384, (1024, 1024, 1000), 3)
    with torch.device("meta"):
        assert sum(p.numel() for p in create_model("nin", num_classes=10).parameters()) == cifar == 966_986
        big = create_model("nin", num_classes=1000, small_input=False)
        assert sum(p.numel() for p in big.parameters()) == imagenet == 7_595_176


def test_scores_are_the_averages_of_one_map_per_class_at_any_size():
    torch.manual_seed(0)
    model = create_model("nin", num_classes=10).eval()
    for side in (32, 40):
        x = torch.randn(2, 3, side, side)
        with torch.no_grad():
            feats = model.forward_features(x)
            conv = model.head[0]
            maps = F.relu(F.conv2d(feats, conv.weight, conv.bias))      # (2, 10, h, w)
            torch.testing.assert_close(model(x), maps.mean(dim=(2, 3)))
