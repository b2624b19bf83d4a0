"""AlexNet and ZFNet against their papers (layer sizes, parameter counts, grouping, LRN)."""

import torch
import torch.nn.functional as F

from vislab.models import create_model
from vislab.models.alexnet import PAPER_WIDTHS


def _conv(c_in: int, c_out: int, k: int, groups: int = 1) -> int:
    return c_out * (c_in // groups) * k * k + c_out


def _fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_2012_network_has_the_papers_60_million_parameters():
    with torch.device("meta"):
        model = create_model("alexnet", num_classes=1000, widths=PAPER_WIDTHS, groups=2, lrn=True)
    # Krizhevsky et al. Fig. 2: 96-256-384-384-256 kernels, conv2/4/5 within each GPU, 4096-4096-1000
    by_hand = (_conv(3, 96, 11) + _conv(96, 256, 5, 2) + _conv(256, 384, 3) + _conv(384, 384, 3, 2)
               + _conv(384, 256, 3, 2) + _fc(256 * 36, 4096) + _fc(4096, 4096) + _fc(4096, 1000))
    assert _count(model) == by_hand == 60_965_224


def test_two_groups_are_two_convolutions_on_the_channel_halves():
    model = create_model("alexnet", widths=PAPER_WIDTHS, groups=2)
    conv = model.features.conv2
    x = torch.randn(1, 96, 13, 13)
    w, b = conv.weight, conv.bias
    halves = [F.conv2d(x[:, i * 48:(i + 1) * 48], w[i * 128:(i + 1) * 128], b[i * 128:(i + 1) * 128],
                       padding=2) for i in range(2)]
    with torch.no_grad():
        torch.testing.assert_close(conv(x), torch.cat(halves, 1))


def test_lrn_is_the_papers_formula():
    """b_i = a_i / (k + alpha * sum_{|j - i| <= n/2} a_j^2)^beta with k=2, n=5, alpha=1e-4, beta=0.75."""
    lrn = create_model("alexnet", lrn=True).features.norm1
    a = torch.randn(1, 8, 3, 3) * 10
    expected = torch.stack([a[:, i] / (2 + 1e-4 * (a[:, max(0, i - 2):i + 3] ** 2).sum(1)) ** 0.75
                            for i in range(8)], 1)
    torch.testing.assert_close(lrn(a), expected)


def test_zfnet_layer_sizes_and_parameters():
    """Zeiler & Fergus Fig. 3: 224 -> 110 (7x7/2) -> 55 -> 26 (5x5/2) -> 13 -> 13 -> 6."""
    with torch.device("meta"):
        model = create_model("zfnet", num_classes=1000)
    sizes = {}
    for name in ("conv1", "pool1", "conv2", "pool2", "conv5", "pool5"):
        model.features.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: sizes.__setitem__(name, o.shape[-1]))
    model(torch.randn(1, 3, 224, 224, device="meta"))
    assert sizes == {"conv1": 110, "pool1": 55, "conv2": 26, "pool2": 13, "conv5": 13, "pool5": 6}
    by_hand = (_conv(3, 96, 7) + _conv(96, 256, 5) + _conv(256, 384, 3) + _conv(384, 384, 3)
               + _conv(384, 256, 3) + _fc(256 * 36, 4096) + _fc(4096, 4096) + _fc(4096, 1000))
    assert _count(model) == by_hand == 62_357_608


def test_small_input_keeps_28x28_maps_as_large_as_224x224_ones():
    for name, side in (("alexnet", 6), ("zfnet", 7)):      # ZFNet's ceil-mode pools round up
        with torch.device("meta"):
            model = create_model(name, in_chans=1, small_input=True)
        assert model.forward_features(torch.randn(1, 1, 28, 28, device="meta")).shape[-2:] == (side, side)
