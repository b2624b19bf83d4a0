"""Hooks never outlive a call (even one that raises), memory does not grow over repeated calls,
and gradients, parameters, BN statistics and train/eval modes are left as they were."""

import gc

import pytest
import torch
import torchvision
from torch import nn

from tests.explain.nets import gap_cnn
from vislab.errors import UserError
from vislab.explain import (
    augmented_grad_cam,
    class_activation_map,
    dead_filters,
    embed,
    grad_cam,
    input_gradient,
    maximize_activation,
    smooth_grad,
)
from vislab.explain.hooks import as_spatial, capture, default_layer, get_layer
from vislab.models import create_model
from vislab.models.vit import VisionTransformer


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def small_cnn():
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=5, in_chans=1, widths=(4, 8, 8))


def every_method(model, x):
    grad_cam(model, x)
    grad_cam(model, x, 1, "stages.1", plus_plus=True)
    class_activation_map(model, x)
    augmented_grad_cam(model, x, n_aug=2, steps=2)
    input_gradient(model, x)
    smooth_grad(model, x, n=2)
    embed(model, x, "stages.0")
    dead_filters(model, x)
    maximize_activation(model, (1, 12, 12), 0, "stages.1", steps=2)


def test_no_hook_left_and_no_memory_growth_over_100_calls():
    model, x = small_cnn(), torch.randn(2, 1, 12, 12)
    every_method(model, x)                         # warm-up: lazily created state
    grad_cam(model, x)
    before = live_tensors()
    for _ in range(100):
        grad_cam(model, x)
    every_method(model, x)
    assert live_tensors() == before
    assert hook_count(model) == 0


def test_hooks_removed_when_the_call_raises():
    model, x = small_cnn(), torch.randn(2, 1, 12, 12)
    with pytest.raises(UserError, match="out of range"):
        grad_cam(model, x, target=7)                # fails after the forward pass
    with pytest.raises(UserError, match="has no layer"):
        grad_cam(model, x, layer="stages.9")        # fails while registering
    with pytest.raises(RuntimeError):
        grad_cam(model, torch.randn(2, 3, 12, 12))  # fails inside the forward pass
    with pytest.raises(RuntimeError), capture(model, ["stem", "stages.0"]):
        model(torch.randn(1, 2, 12, 12))
    assert hook_count(model) == 0


def test_gradients_parameters_and_modes_are_left_as_they_were():
    model, x = small_cnn(), torch.randn(4, 1, 12, 12)
    model.train()
    model.stages[0].eval()                          # a mixed state must come back mixed
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    every_method(model, x)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())   # BN stats too
    assert [m.training for m in model.modules()] == modes


def test_layer_names_and_default_layers():
    with pytest.raises(UserError, match="did you mean stages.1"):
        get_layer(small_cnn(), "stages1")
    x = torch.randn(1, 1, 16, 16)
    assert default_layer(small_cnn(), x) == "stages.2"
    vit = VisionTransformer(16, 4, 3, 1, dim=12, depth=3, num_heads=2, mlp_dim=24)
    assert default_layer(vit, x) == "blocks.1"      # the last block's patch tokens get no gradient
    assert default_layer(gap_cnn(), torch.randn(1, 3, 16, 16)) == "relu2"
    tv = torchvision.models.resnet18(num_classes=3)
    assert default_layer(tv, torch.randn(1, 3, 64, 64)) == "layer4"


def test_tokens_become_the_patch_grid():
    B, D = 2, 5
    grid = torch.randn(B, D, 2, 3)                  # (B, D, h, w) for a 20x30 image
    tokens = torch.cat([torch.randn(B, 1, D), grid.flatten(2).transpose(1, 2)], 1)
    assert torch.equal(as_spatial(tokens, (20, 30)), grid)
    maps = torch.randn(B, D, 4, 4)
    assert as_spatial(maps, (16, 16)) is maps
    with pytest.raises(UserError, match="patch grid"):
        as_spatial(torch.randn(B, 35, D), (16, 16))   # 27..35 tokens: no square
