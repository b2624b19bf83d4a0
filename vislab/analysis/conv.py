"""A convolution is a linear map, and a linear layer is a convolution.

* :func:`conv_as_matrix` writes a 2-D convolution as the dense matrix that multiplies the flattened
  image (each row is one output unit: the kernel laid on its receptive field, zeros elsewhere;
  a doubly block-Toeplitz matrix), and :func:`conv2d_im2col` computes it the way libraries do,
  as one matrix product with the unfolded patches ("im2col").
* :func:`convolutionalise` turns the fully connected head of a classifier into convolutions, so
  that on a larger image it outputs a map of class scores: the classifier slid over the image
  with the network's total stride, computed once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from vislab.analysis.summary import meta_twins


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def conv_as_matrix(weight: Tensor, input_shape: Sequence[int], stride: int | Sequence[int] = 1,
                   padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                   groups: int = 1) -> Tensor:
    """The matrix ``M`` of shape ``(C_out*H_out*W_out, C_in*H*W)`` with
    ``F.conv2d(x, weight, None, stride, padding, dilation, groups).flatten() == M @ x.flatten()``
    for one image ``x`` of shape ``input_shape = (C_in, H, W)`` (zero padding).

    Row ``(o, i, j)`` holds ``weight[o, c, u, v]`` at column ``(g*C_in/groups + c,
    i*s - p + u*d, j*s - p + v*d)`` when that pixel is inside the image.  Its transpose is the
    transposed convolution: ``M.T @ y == F.conv_transpose2d(y, weight, ...)`` (up to output
    padding).
    """
    c_in, h, w = input_shape
    c_out, c_in_g, kh, kw = weight.shape
    if c_in != c_in_g * groups or c_out % groups:
        raise ValueError(f"weight {tuple(weight.shape)} with groups={groups} does not fit "
                         f"{c_in} input channels: C_in must be weight.shape[1] * groups")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho, wo = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)
    o, c, u, v, i, j = torch.meshgrid(*(torch.arange(n, device=weight.device)
                                        for n in (c_out, c_in_g, kh, kw, ho, wo)), indexing="ij")
    y, x = i * sh - ph + u * dh, j * sw - pw + v * dw          # input pixel under weight[o,c,u,v]
    ch = o // (c_out // groups) * c_in_g + c                   # input channel of group g
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    rows = ((o * ho + i) * wo + j)[inside]
    cols = ((ch * h + y) * w + x)[inside]
    m = weight.new_zeros(c_out * ho * wo, c_in * h * w)
    m[rows, cols] = weight[o[inside], c[inside], u[inside], v[inside]]
    return m


def conv2d_im2col(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                  stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                  dilation: int | Sequence[int] = 1, groups: int = 1) -> Tensor:
    """``F.conv2d`` as one matrix product per group: the kernels, flattened to rows
    ``(C_out/groups, C_in/groups*kh*kw)``, times the patches ``F.unfold`` extracts as columns."""
    b, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    cols = F.unfold(x, (kh, kw), dilation=d, padding=p, stride=s)    # (B, C_in*kh*kw, L)
    cols = cols.view(b, groups, c_in_g * kh * kw, -1)
    kernels = weight.view(groups, c_out // groups, c_in_g * kh * kw)
    out = torch.einsum("gok,bgkl->bgol", kernels, cols).reshape(b, c_out, -1)
    if bias is not None:
        out = out + bias.view(1, -1, 1)
    return out.view(b, c_out, _out_size(h, kh, s[0], p[0], d[0]),
                    _out_size(w, kw, s[1], p[1], d[1]))


_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
                nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Identity)


def convolutionalise(model: nn.Sequential, input_size: Sequence[int]) -> nn.Sequential:
    """A fully convolutional copy of ``model``, an ``nn.Sequential`` whose head is ``Flatten``
    followed by ``Linear`` layers and elementwise layers (ReLU, Dropout...).

    The first ``Linear`` after the flatten becomes a convolution with the kernel size of the map it
    read at ``input_size`` (its weight reshaped to ``(out, C, h, w)``), each later ``Linear`` a 1x1
    convolution.  On an ``input_size`` image the result equals ``model``'s (as a 1x1 map); on a
    larger image, score ``[:, :, i, j]`` equals ``model`` on the ``input_size`` window at
    ``(i*jump, j*jump)``, where ``jump`` is the network's total stride (exactly so when the layers
    before the flatten do not pad).

    Example (torchvision's VGG; its adaptive pool is the identity at 224 and must go)::

        vgg = torchvision.models.vgg16()
        fcn = convolutionalise(nn.Sequential(vgg.features, nn.Flatten(), *vgg.classifier),
                               (3, 224, 224))
        fcn(torch.randn(1, 3, 384, 384)).shape       # (1, 1000, 6, 6): a score map
    """
    layers = list(model)
    flat = next((i for i, m in enumerate(layers) if isinstance(m, nn.Flatten)), None)
    head = layers[flat + 1:] if flat is not None else []
    if not any(isinstance(m, nn.Linear) for m in head) or \
            not all(isinstance(m, (nn.Linear, *_ELEMENTWISE)) for m in head):
        raise ValueError("convolutionalise needs an nn.Sequential ending in Flatten, then Linear "
                         "and elementwise layers (ReLU, Dropout...); rebuild the model that way")
    body = nn.Sequential(*layers[:flat])
    dtype = next(model.parameters()).dtype
    x = torch.empty(1, *input_size, device="meta", dtype=dtype)
    c, h, w = torch.func.functional_call(body, meta_twins(body), (x,)).shape[1:]
    first = next(m for m in head if isinstance(m, nn.Linear))
    if c * h * w != first.in_features:
        raise ValueError(f"the map before Flatten is {c}x{h}x{w} at input {tuple(input_size)}, "
                         f"but the first Linear takes {first.in_features} features: pass the "
                         "input size the classifier was built for")
    convs = [_linear_as_conv(m, (h, w) if m is first else (1, 1)) if isinstance(m, nn.Linear)
             else copy.deepcopy(m) for m in head]
    return nn.Sequential(*copy.deepcopy(layers[:flat]), *convs)


def _linear_as_conv(linear: nn.Linear, kernel: tuple[int, int]) -> nn.Conv2d:
    """The convolution that applies ``linear`` to every ``kernel`` window of a map."""
    cin = linear.in_features // (kernel[0] * kernel[1])
    conv = nn.Conv2d(cin, linear.out_features, kernel, bias=linear.bias is not None,
                     device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, cin, *kernel))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


__all__ = ["conv2d_im2col", "conv_as_matrix", "convolutionalise"]
