"""Upsampling operators against torch's own: F.interpolate, F.conv_transpose2d, nn.MaxUnpool2d,
and the notes' transposed-convolution example worked by hand."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislab.models.upsample import (
    BilinearUpsample,
    bilinear_kernel,
    checkerboard_maps,
    conv_transpose2d_scatter,
    max_unpool2d,
)


def test_bilinear_kernel_by_hand():
    k2 = torch.tensor([0.25, 0.75, 0.75, 0.25])              # even factor: peak between two taps
    torch.testing.assert_close(bilinear_kernel(2), torch.outer(k2, k2))
    k3 = torch.tensor([1, 2, 3, 2, 1]) / 3                     # odd factor: peak on the middle tap
    torch.testing.assert_close(bilinear_kernel(3), torch.outer(k3, k3))
    assert bilinear_kernel(8).shape == (16, 16) and bilinear_kernel(8, align_corners=True).shape == (15, 15)


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_bilinear_upsample_equals_interpolate_inside_a_border_of_factor_half(factor):
    """Interior: equal to F.interpolate(align_corners=False).  The outer ``factor // 2`` pixels
    differ: their source coordinate falls outside the input, where interpolate clamps to the
    edge pixel and the transposed conv sees zeros (its weights there sum to less than 1)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 9)
    up = BilinearUpsample(3, factor)
    out = up(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert out.shape == ref.shape == (2, 3, 7 * factor, 9 * factor)
    b = factor // 2
    torch.testing.assert_close(out[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[..., :b, :], ref[..., :b, :], atol=1e-3)   # the border is real
    assert not up.weight.requires_grad and not [p for p in up.parameters() if p.requires_grad]


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_corner_aligned_upsample_equals_interpolate_align_corners(factor):
    """align_corners=True: input pixel i lands on output pixel factor * i; the first
    (n - 1) * factor + 1 outputs are F.interpolate(align_corners=True), exactly, to the edge."""
    x = torch.randn(1, 2, 5, 6)
    out = BilinearUpsample(2, factor, align_corners=True)(x)
    assert out.shape == (1, 2, 5 * factor, 6 * factor)
    h, w = 4 * factor + 1, 5 * factor + 1
    ref = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out[..., :h, :w], ref, atol=1e-5, rtol=1e-5)


def test_learnable_upsample_learns_channel_by_channel():
    up = BilinearUpsample(3, 2, learnable=True)
    assert up.weight.requires_grad and up.weight.shape == (3, 1, 4, 4) and up.bias is None
    x = torch.randn(1, 3, 4, 4)
    up(x).square().sum().backward()
    assert up.weight.grad is not None and up.weight.grad.abs().sum() > 0
    with torch.no_grad():                                     # channel 0 leaves channels 1, 2 alone
        before = up(x)
        x[:, 0] += 1
        after = up(x)
    assert not torch.allclose(before[:, 0], after[:, 0]) and torch.equal(before[:, 1:], after[:, 1:])


@pytest.mark.parametrize("stride,padding,kernel", [(1, 0, (3, 3)), (2, 0, (3, 3)), (2, 1, (4, 4)), (3, 1, (5, 3)),
                                                   ((2, 3), (1, 0), (4, 3)), (4, 2, (8, 8))])
def test_scatter_equals_conv_transpose2d(stride, padding, kernel):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    weight = torch.randn(3, 4, *kernel, dtype=torch.float64)     # (C_in, C_out, kh, kw)
    torch.testing.assert_close(conv_transpose2d_scatter(x, weight, stride, padding),
                               F.conv_transpose2d(x, weight, stride=stride, padding=padding))


def test_scatter_reproduces_the_notes_worked_example():
    """Input 1..9, all-ones 3x3 kernel, stride 2, no padding: pixel (i, j) stamps a 3x3 block
    of its value at (2i, 2j); rows and columns 2 and 4 are shared by two stamps and add up
    (pixel (2, 2): 1 + 2 + 4 + 5)."""
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    expected = torch.tensor([
        [1, 1, 3, 2, 5, 3, 3],
        [1, 1, 3, 2, 5, 3, 3],
        [5, 5, 12, 7, 16, 9, 9],
        [4, 4, 9, 5, 11, 6, 6],
        [11, 11, 24, 13, 28, 15, 15],
        [7, 7, 15, 8, 17, 9, 9],
        [7, 7, 15, 8, 17, 9, 9],
    ], dtype=torch.float32)
    out = conv_transpose2d_scatter(x, torch.ones(1, 1, 3, 3), stride=2)[0, 0]
    torch.testing.assert_close(out, expected)
    assert out[0, :2].tolist() == [1, 1] and out[0, 2] == 1 + 2          # the notes' "1 + (2*1)"


def test_scatter_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="C_in"):
        conv_transpose2d_scatter(torch.randn(1, 2, 3, 3), torch.randn(3, 1, 3, 3))


@pytest.mark.parametrize("size,kernel,stride", [((8, 8), 2, 2), ((7, 9), 2, 2), ((9, 11), 3, 2)])
def test_max_unpool_equals_torch(size, kernel, stride):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    pooled, indices = F.max_pool2d(x, kernel, stride, return_indices=True)
    ours = max_unpool2d(pooled, indices, size)
    ref = nn.MaxUnpool2d(kernel, stride)(pooled, indices, output_size=size)
    torch.testing.assert_close(ours, ref)
    assert ours.shape[-2:] == size and (ours != 0).sum() == (ref != 0).sum() > 0


def test_checkerboard_maps():
    maps = checkerboard_maps(8)
    k3 = maps["transpose_k3_s2"]
    assert k3.shape == (17, 17)
    interior = k3[2:-2, 2:-2]
    assert set(interior.unique().tolist()) == {1.0, 2.0, 4.0}          # uneven overlap: a checkerboard
    assert k3[4, 4] == 4 and k3[4, 5] == 2 and k3[5, 5] == 1
    k4 = maps["transpose_k4_s2"]
    assert k4.shape == (16, 16) and (k4[1:-1, 1:-1] == 4).all() and k4[0, 0] == 1
    resize = maps["resize_conv3"]
    assert resize.shape == (16, 16) and (resize[1:-1, 1:-1] == 9).all()
