"""First-layer filters and dead-filter detection on networks with dead filters built in."""

import torch
from torch import nn

from vislab.explain.filters import dead_filters, filter_images, first_conv
from vislab.models import create_model


def test_first_conv_and_its_images():
    model = create_model("small_cnn", num_classes=3, in_chans=1, widths=(4, 8, 8))
    name, conv = first_conv(model)
    assert name == "stem.0" and conv is model.stem[0]
    assert torch.equal(filter_images(conv), conv.weight.detach())
    wide = nn.Conv2d(4, 6, 3)
    assert torch.allclose(filter_images(wide), wide.weight.detach().mean(1, keepdim=True))


class Shared(nn.Module):
    """conv -> ReLU -> conv -> the same ReLU again (like torchvision's ResNet blocks)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.conv1.weight[1] = 0.0          # filter 1: no weights, output = bias everywhere
            self.conv1.bias[1] = 0.3
            self.conv1.weight[2] *= 0.01        # filter 2: never overcomes its bias
            self.conv1.bias[2] = -100.0
            self.conv2.bias[0] = -100.0         # second call of the ReLU: channel 0 dead

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))))


def test_dead_filters_are_found_per_layer_and_per_call():
    rep = {r.layer: r for r in dead_filters(Shared(), torch.randn(64, 1, 12, 12), batch_size=16)}
    assert set(rep) == {"conv1", "relu", "conv2", "relu#1"}
    assert rep["conv1"].constant == [1] and rep["conv1"].zero == []
    assert rep["relu"].zero == [2] and rep["relu"].constant == [1] and rep["relu"].dead == [1, 2]
    assert rep["relu#1"].zero == [0] and rep["relu#1"].channels == 3
    assert rep["conv2"].dead == []
    # the per-channel std over images and positions, as numpy computes it
    with torch.no_grad():
        x = torch.randn(8, 1, 12, 12)
        out = Shared().conv1(x).transpose(0, 1).reshape(4, -1).double()
    std = dead_filters(Shared(), x, ["conv1"])[0].std
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), torch.from_numpy(out.numpy().std(1)), atol=1e-9)
