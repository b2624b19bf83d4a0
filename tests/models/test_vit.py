"""Vision Transformer against Dosovitskiy et al. 2021 / DeiT (sizes) and torch's attention."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from vislab.models import create_model
from vislab.models.vit import Attention


# DeiT (Touvron et al. 2021) Table 1: Ti 5M (5.7 M exactly), S 22M; ViT paper Table 1: B 86M
@pytest.mark.parametrize("name,paper", [("vit_ti_16", 5.7), ("vit_s_16", 22.1), ("vit_b_16", 86.6)])
def test_parameter_counts(name, paper):
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == paper


def test_attention_equals_torch_multihead_attention():
    torch.manual_seed(0)
    attn = Attention(32, 4).eval()
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
        x = torch.randn(2, 7, 32)
        torch.testing.assert_close(attn(x), mha(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)


class _Calls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_attention_products_are_explicit_matmuls():
    attn = Attention(32, 4)
    with _Calls() as calls:
        attn(torch.randn(2, 7, 32))
    assert calls.names.count("matmul") == 2                           # Q K^T and A V (the @s)
    fused = {F.scaled_dot_product_attention.__name__, F.multi_head_attention_forward.__name__}
    assert not fused & set(calls.names)


def test_position_embedding_follows_the_patch_grid():
    model = create_model("vit_ti_16", num_classes=10, in_chans=1, small_input=True, img_size=28).eval()
    assert model.patch_size == 4 and model.pos_embed.shape == (1, 1 + 7 * 7, 192)
    torch.testing.assert_close(model._pos_embed(7, 7), model.pos_embed)
    assert model._pos_embed(8, 8).shape == (1, 65, 192)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)              # interpolated to 8x8
