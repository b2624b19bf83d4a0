"""CAM, Grad-CAM, Grad-CAM++ and Augmented Grad-CAM against hand-computed maps, the CAM/Grad-CAM
identity on global-average-pooling networks, and autograd on a vision transformer's tokens."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from tests.explain.nets import IdentityFeatures, gap_cnn
from vislab.errors import UserError
from vislab.explain.cam import (
    augmented_grad_cam,
    class_activation_map,
    grad_cam,
    normalize,
    upsample,
)
from vislab.models import create_model
from vislab.models.vit import VisionTransformer

W = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 3.0]])      # 3 classes x 2 channels
B = torch.tensor([0.1, -0.2, 0.3])
X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]],                  # f_0
                   [[0.0, 1.0], [-1.0, 2.0]]]])               # f_1


def test_cam_is_the_hand_computed_weighted_sum():
    net = IdentityFeatures(W, B)
    # M_c = w_0^c f_0 + w_1^c f_1, written out by hand
    m0 = torch.tensor([[1.0, 4.0], [1.0, 8.0]])
    m1 = torch.tensor([[-1.0, -1.5], [-3.5, -3.0]])
    m2 = torch.tensor([[0.0, 3.0], [-3.0, 6.0]])
    assert torch.allclose(class_activation_map(net, X)[0], m0)       # predicted: class 0 (3.6)
    assert torch.allclose(class_activation_map(net, X, 1)[0], m1)
    both = class_activation_map(net, X.repeat(2, 1, 1, 1), [2, 1])
    assert torch.allclose(both, torch.stack([m2, m1]))


def test_cam_refuses_a_network_that_is_not_gap_and_one_linear_layer():
    torch.manual_seed(0)
    gmp = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(UserError, match="Grad-CAM"):
        class_activation_map(gmp, torch.randn(2, 1, 8, 8), layer="1")


@pytest.mark.parametrize("case", ["vislab", "plain", "torchvision"])
def test_grad_cam_equals_relu_cam_over_hw_for_gap_networks(case):
    """For GAP + FC, dS_c/dA_k(x, y) = w_k^c / (h w): Grad-CAM = ReLU(CAM) / (h w)."""
    torch.manual_seed(0)
    if case == "vislab":
        net, x, layer = create_model("small_cnn", num_classes=5, in_chans=1, widths=(4, 8, 8)).eval(), torch.randn(3, 1, 16, 16), None
    elif case == "plain":
        net, x, layer = gap_cnn(), torch.randn(3, 3, 12, 12), None
    else:
        net, x, layer = torchvision.models.resnet18(num_classes=4).eval(), torch.randn(2, 3, 64, 64), "layer4"
    for target in (None, 1):
        cam = class_activation_map(net, x, target, layer)
        gc = grad_cam(net, x, target, layer)
        h, w = cam.shape[-2:]
        assert torch.allclose(gc * h * w, cam.clamp(min=0), atol=1e-5 * cam.abs().max())


def test_grad_cam_plus_plus_matches_its_closed_form():
    """GAP + FC: g = dS_c/dA_k = w_k^c / Z everywhere, so alpha_k = g^2 / (2 g^2 + sum(A_k) g^3)
    and the weight of channel k is Z alpha_k ReLU(g)."""
    net = IdentityFeatures(W, B)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.5, 1.0], [0.0, 2.0]]]])
    for c in range(3):
        g = W[c] / 4
        alpha = torch.where(g != 0, g ** 2 / (2 * g ** 2 + x[0].sum((1, 2)) * g ** 3), torch.zeros(2))
        weights = 4 * alpha * g.clamp(min=0)
        expected = (weights[:, None, None] * x[0]).sum(0).clamp(min=0)
        assert torch.allclose(grad_cam(net, x, c, plus_plus=True)[0], expected, atol=1e-6)


def test_vit_tokens_are_mapped_on_the_patch_grid():
    torch.manual_seed(0)
    vit = VisionTransformer(16, 4, 3, 1, dim=12, depth=2, num_heads=2, mlp_dim=24).eval()
    x = torch.randn(2, 1, 16, 16)
    maps = grad_cam(vit, x, 2)                    # default layer: blocks.0, input of the last block
    # oracle: our own hook and torch.autograd.grad on the same tokens
    saved = {}
    h = vit.blocks[0].register_forward_hook(lambda m, a, o: saved.setdefault("A", o))
    try:
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(vit(xg)[:, 2].sum(), saved["A"])
    finally:
        h.remove()
    A = saved["A"][:, 1:].transpose(1, 2).reshape(2, 12, 4, 4)
    G = g[:, 1:].transpose(1, 2).reshape(2, 12, 4, 4)
    expected = (G.mean((2, 3))[:, :, None, None] * A).sum(1).clamp(min=0)
    assert maps.shape == (2, 4, 4)
    assert torch.allclose(maps, expected.detach(), atol=1e-6)
    assert maps.abs().sum() > 0


def test_augmented_grad_cam_recovers_detail_below_the_layer_stride():
    """A network whose 'feature map' is the image average-pooled 4x4: its Grad-CAM is the
    image at a quarter of the resolution (the observation model exactly), and the map
    super-resolved from warped copies must be much closer to the full-resolution image than
    the up-sampled Grad-CAM is."""
    net = nn.Sequential()
    net.add_module("pool", nn.AvgPool2d(4))
    net.add_module("gap", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(1, 2))
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net.fc.bias.zero_()
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    truth = torch.stack([((xx - 12) ** 2 + (yy - 18) ** 2 < 40).float(),        # a disc
                         ((xx % 8 < 3) & (yy > 6) & (yy < 26)).float()])           # thin bars
    x = F.avg_pool2d(truth[:, None], 3, 1, 1)                                   # softened edges
    plain = normalize(upsample(grad_cam(net, x, 0, "pool"), (32, 32)))
    aug = augmented_grad_cam(net, x, 0, "pool", n_aug=12, tv_weight=0.005, steps=150)
    assert aug.shape == (2, 32, 32) and aug.min() >= 0
    err = lambda m: (normalize(m) - x[:, 0]).pow(2).mean((1, 2)).sqrt()   # noqa: E731
    assert (err(aug) < 0.6 * err(plain)).all(), (err(aug), err(plain))
