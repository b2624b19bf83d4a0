"""Convolution as a matrix (Toeplitz and im2col) against F.conv2d / F.conv_transpose2d, and
convolutionalised classifiers against explicitly sliding the classifier."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislab.analysis import conv2d_im2col, conv_as_matrix, convolutionalise

# (C_in, C_out, kernel, stride, padding, dilation, groups, H, W)
GEOMETRIES = [
    (3, 4, 3, 1, 1, 1, 1, 7, 6),
    (4, 6, 3, 2, 2, 2, 2, 9, 8),
    (6, 6, (3, 2), (2, 1), (1, 0), (1, 2), 6, 8, 9),     # depthwise, rectangular
    (2, 3, 1, 1, 0, 1, 1, 5, 5),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv_as_matrix(geometry):
    c_in, c_out, k, s, p, d, g, h, w = geometry
    k2 = k if isinstance(k, tuple) else (k, k)
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(c_out, c_in // g, *k2, dtype=torch.float64, generator=gen)
    bias = torch.randn(c_out, dtype=torch.float64, generator=gen)
    x = torch.randn(2, c_in, h, w, dtype=torch.float64, generator=gen)
    ref = F.conv2d(x, weight, bias, s, p, d, g)
    m = conv_as_matrix(weight, (c_in, h, w), s, p, d, g)
    torch.testing.assert_close(x.flatten(1) @ m.T + bias.repeat_interleave(ref[0, 0].numel()),
                               ref.flatten(1))
    torch.testing.assert_close(conv2d_im2col(x, weight, bias, s, p, d, g), ref)
    # the transpose is the transposed convolution (the gradient of the convolution)
    y = torch.randn_like(ref)
    size = F.conv_transpose2d(y, weight, None, s, p, 0, g, d).shape[-2:]
    out_pad = [n - m_ for n, m_ in zip((h, w), size)]
    torch.testing.assert_close((y.flatten(1) @ m).view(2, c_in, h, w),
                               F.conv_transpose2d(y, weight, None, s, p, out_pad, g, d))


def test_conv_as_matrix_checks_groups():
    with pytest.raises(ValueError, match="groups"):
        conv_as_matrix(torch.zeros(4, 3, 3, 3), (4, 5, 5), groups=2)


def _lenet() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10)).double().eval()


def test_convolutionalise_equals_sliding_the_classifier():
    lenet = _lenet()
    fcn = convolutionalise(lenet, (1, 32, 32))
    x = torch.randn(2, 1, 48, 41, dtype=torch.float64)
    with torch.no_grad():
        scores = fcn(x)                               # (2, 10, 5, 3): windows every 4 pixels
        assert scores.shape == (2, 10, 5, 3)
        for i in range(5):
            for j in range(3):
                window = x[:, :, 4 * i:4 * i + 32, 4 * j:4 * j + 32]
                torch.testing.assert_close(scores[:, :, i, j], lenet(window))
        torch.testing.assert_close(fcn(x[:, :, :32, :32]).flatten(1), lenet(x[:, :, :32, :32]))


def test_convolutionalise_rejects_other_heads():
    with pytest.raises(ValueError, match="Flatten"):
        convolutionalise(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1)), (1, 8, 8))
    with pytest.raises(ValueError, match="input size"):
        convolutionalise(_lenet(), (1, 28, 28))
