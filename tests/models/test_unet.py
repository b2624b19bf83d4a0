"""U-Net (Ronneberger et al. 2015): the paper's tile sizes, centre crop and mirror padding by
hand and against numpy, pixel alignment (a mirror-symmetric U-Net commutes with torch.flip),
channel doubling, and a tiny model that learns a few images."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.models.test_fcn import _symmetrise, one_thread, overfit  # noqa: F401  (fixture)
from vislab.errors import UserError
from vislab.models.registry import default_kwargs, list_models
from vislab.models.unet import UNet, center_crop, mirror_pad, unet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("up", ["transpose", "bilinear"])
@pytest.mark.parametrize("size", [(64, 64), (70, 90)])
def test_output_has_the_input_size(padding, up, size):
    model = unet(num_classes=5, depth=3, width=4, up=up, padding=padding).eval()
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size) and model.num_classes == 5


def test_center_crop_by_hand():
    x = torch.arange(25).view(1, 1, 5, 5)                     # the notes: a 5x5 map's central 3x3
    assert center_crop(x, (3, 3))[0, 0].tolist() == [[6, 7, 8], [11, 12, 13], [16, 17, 18]]
    y = torch.arange(20).view(4, 5)                           # odd surplus: extra row at the bottom
    assert center_crop(y, (3, 3)).tolist() == [[1, 2, 3], [6, 7, 8], [11, 12, 13]]
    assert center_crop(y, (4, 5)) is not None and torch.equal(center_crop(y, (4, 5)), y)
    with pytest.raises(ValueError, match="larger"):
        center_crop(y, (5, 5))


@pytest.mark.parametrize("pads", [(2, 3, 1, 0), (7, 12, 20, 9)])
def test_mirror_pad_equals_numpy_reflect(pads):
    """Reflection without repeating the edge, also past the map's own width (numpy folds back)."""
    x = torch.randn(1, 2, 6, 5)
    top, bottom, left, right = pads
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (top, bottom), (left, right)), mode="reflect")
    torch.testing.assert_close(mirror_pad(x, *pads), torch.from_numpy(ref))


def test_valid_tile_matches_the_paper():
    """Fig. 1: a 572x572 tile gives a 388x388 output (92 px of context on each side)."""
    model = unet(num_classes=2, in_chans=1, padding="valid", norm=False)
    assert model.tile(388) == (572, 388, 92)
    assert model.tile(380) == (572, 388, 92)                  # the smallest tile that covers 380
    with torch.device("meta"):
        paper = unet(num_classes=2, in_chans=1, padding="valid", norm=False)
        assert paper(torch.empty(1, 1, 572, 572)).shape == (1, 2, 572, 572)
    same = unet(padding="same")
    assert same.tile(70) == (80, 80, 0) and same.tile(64) == (64, 64, 0)


@pytest.mark.parametrize("padding,width", [("same", 70), ("valid", 68), ("valid", 72)])
@pytest.mark.parametrize("up", ["transpose", "bilinear"])
def test_mirror_symmetric_unet_commutes_with_flip(padding, width, up):
    """Symmetric kernels and even pooling grids make the network flip-equivariant if the image
    sits in the middle of its (mirror-padded) tile and the output is cropped from the middle:
    a misplaced crop or pad breaks it.  (Widths chosen so that the surplus is even.)"""
    torch.manual_seed(0)
    model = unet(num_classes=3, depth=2, width=4, up=up, padding=padding).eval()
    _symmetrise(model)
    size_in, size_out, _ = model.tile(width)
    assert (size_out - width) % 2 == 0 and (size_in - width) % 2 == 0
    x = torch.randn(1, 3, 36, width)
    torch.testing.assert_close(model(x.flip(-1)), model(x).flip(-1), atol=1e-4, rtol=1e-4)


def test_channels_double_at_every_level():
    model = unet(num_classes=3, depth=3, width=6)
    assert model.depth == 3 and len(model.encoder) == 4 and len(model.decoder) == 3
    convs = [[c for c in block.modules() if isinstance(c, nn.Conv2d)] for block in model.encoder]
    assert [[c.out_channels for c in level] for level in convs] == [[6, 6], [12, 12], [24, 24], [48, 48]]
    assert [c[0].kernel_size for c in convs] == [(3, 3)] * 4
    ups = [up.conv for up in model.ups]
    assert [(u.in_channels, u.out_channels) for u in ups] == [(12, 6), (24, 12), (48, 24)]
    assert all(isinstance(u, nn.ConvTranspose2d) and u.kernel_size == u.stride == (2, 2) for u in ups)
    assert [block[0][0].in_channels for block in model.decoder] == [12, 24, 48]   # concatenation
    assert model.head.in_channels == 6 and model.head.out_channels == 3
    plain = unet(depth=1, width=4, norm=False, up="bilinear")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert isinstance(plain.ups[0].conv, nn.Conv2d) and plain.ups[0].conv.kernel_size == (3, 3)


def test_bad_options_are_refused():
    with pytest.raises(UserError, match="upsampling"):
        unet(up="nearest")
    with pytest.raises(UserError, match="padding"):
        unet(padding="reflect")
    with pytest.raises(UserError, match="depth"):
        unet(depth=0)


def test_registered_as_segmentation_with_json_defaults():
    assert "unet" in list_models(kind="segmentation")
    assert json.loads(json.dumps(default_kwargs("unet"))) == {
        "depth": 4, "width": 64, "up": "transpose", "padding": "same", "norm": True}


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_channels_last_and_bf16_autocast(padding):
    model = unet(num_classes=3, depth=2, width=4, padding=padding).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 70, 90).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (2, 3, 70, 90)
    out.float().sum().backward()
    assert model.head.weight.grad is not None


def test_unet_overfits_four_images():
    torch.manual_seed(0)
    model = UNet(num_classes=3, depth=3, width=8)
    acc, seconds = overfit(model, steps=100, lr=1e-2)
    assert acc >= 0.9, acc
    assert seconds < 10, seconds
