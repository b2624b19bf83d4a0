"""Gradient saliency against torch.autograd.grad, and SmoothGrad against closed forms."""

import torch
from torch import nn

from tests.explain.nets import gap_cnn
from vislab.explain.saliency import input_gradient, saliency_map, smooth_grad


def test_input_gradient_equals_autograd():
    net, x = gap_cnn(), torch.randn(3, 3, 10, 10)
    targets = torch.tensor([0, 3, 1])
    xg = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(net(xg).gather(1, targets[:, None]).sum(), xg)
    assert torch.allclose(input_gradient(net, x, targets), expected)
    # default target: the predicted class of each image
    pred = net(x).argmax(1)
    (expected,) = torch.autograd.grad(net(xg).gather(1, pred[:, None]).sum(), xg)
    assert torch.allclose(input_gradient(net, x), expected)
    assert torch.equal(saliency_map(expected), expected.abs().max(1).values)


def test_smooth_grad_of_a_linear_model_is_its_weight_row():
    """The gradient of a linear score does not depend on the input, so noise changes nothing."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 3))
    x = torch.randn(4, 2, 5, 5)
    sg = smooth_grad(net, x, 2, n=5, noise=0.5)
    assert torch.allclose(sg, net[1].weight[2].reshape(1, 2, 5, 5).expand(4, -1, -1, -1), atol=1e-6)


def test_smooth_grad_averages_the_gradients_of_noisy_copies():
    net, x = gap_cnn(), torch.randn(2, 3, 8, 8)
    assert torch.allclose(smooth_grad(net, x, 1, n=3, noise=0.0), input_gradient(net, x, 1))
    # oracle: the same noise drawn here, the average taken with autograd
    g = torch.Generator().manual_seed(7)
    sigma = 0.2 * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    total = torch.zeros_like(x)
    for _ in range(4):
        xn = (x + sigma * torch.randn(x.shape, generator=g)).requires_grad_(True)
        total += torch.autograd.grad(net(xn)[:, 1].sum(), xn)[0]
    assert torch.allclose(smooth_grad(net, x, 1, n=4, noise=0.2, seed=7), total / 4, atol=1e-6)
