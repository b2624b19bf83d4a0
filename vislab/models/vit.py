"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

The image is cut into non-overlapping P x P patches, each linearly embedded into a D-dimensional
token (a PxP/P conv); a learnable class token is prepended and a learnable position embedding is
added (no sinusoids; ViT has no translation equivariance built in and must learn it, hence its
hunger for data).  A stack of pre-norm transformer encoder blocks follows,

    x = x + MSA(LN(x));  x = x + MLP(LN(x)),

and the final LN-ed class token is the image representation, classified by a linear head.

Attention is written out with ``@`` (``Q K^T / sqrt(d)`` and ``softmax(.) V``) rather than
``F.scaled_dot_product_attention`` or ``nn.MultiheadAttention``, so that vislab's analysis tools
see both matrix products.  The position embedding is interpolated (bicubic) when the input's
patch grid differs from the one it was made for, as the paper does to fine-tune at a higher
resolution.  Sizes (D, depth, heads, MLP): Ti 192/12/3/768 and S 384/12/6/1536 (DeiT), B
768/12/12/3072, L 1024/24/16/4096.  ``small_input=True`` uses 4x4 patches (an 8x8 grid on
32x32 inputs, 7x7 on 28x28; 2x2 below 16 pixels: 4x4 on 8x8 digits) instead of 16x16 or 32x32
ones; ``patch_size`` sets any other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier
from vislab.models.layers import DropPath
from vislab.models.registry import register_model


class Attention(nn.Module):
    """Multi-head self-attention with explicit matrix products.

    Args:
        dim: token width D; num_heads: h (head width D / h).
        attn_drop / proj_drop: dropout on the attention weights and on the output.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise UserError(f"dim {dim} is not divisible by num_heads {num_heads}: pick a divisor")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:   # (B, N, D)
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                         # each (B, h, N, d)
        attn = (q * self.scale) @ k.transpose(-2, -1)   # (B, h, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B, N, D)  # (B, h, N, d) -> (B, N, D)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Linear - GELU - dropout - linear - dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:   # (B, N, D) -> (B, N, D)
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer encoder block."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_dim, drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:   # (B, N, D)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class VisionTransformer(Classifier):
    """Patch embedding, class token, position embedding, encoder blocks, LN, linear head on the
    class token.

    Args:
        img_size: the input side the position embedding is made for; patch_size: P.
        num_classes / in_chans: classes and input channels.
        dim / depth / num_heads / mlp_dim: the model size.
        drop / attn_drop / drop_path_rate: dropout, attention dropout, stochastic depth.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, num_classes: int = 1000,
                 in_chans: int = 3, dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_dim: int = 3072, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if img_size % patch_size:
            raise UserError(f"img_size {img_size} is not a multiple of patch_size {patch_size}: "
                            "round it to one")
        self.patch_size, self.grid = patch_size, img_size // patch_size
        self.patch_embed = nn.Conv2d(in_chans, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid ** 2 + 1, dim))
        self.pos_drop = nn.Dropout(drop)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_dim, drop, attn_drop,
                                            drop_path_rate * i / max(depth - 1, 1)) for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=dim, reduction=patch_size)
                             for i in range(depth)]
        self.num_classes = num_classes
        self.num_features = dim
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated-normal (0.02) position embedding and class token, Xavier linear layers and
        patch embedding (as a linear layer on flattened patches), zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)

    def _pos_embed(self, h: int, w: int) -> Tensor:
        """The position embedding for an h x w patch grid: (1, 1 + h w, D)."""
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        cls_pos, grid_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid_pos = grid_pos.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
        grid_pos = F.interpolate(grid_pos, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid_pos.flatten(2).transpose(1, 2)], 1)

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, 1 + HW/P^2, D)
        x = self.patch_embed(x)                         # (B, D, H/P, W/P)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)                # (B, hw, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self._pos_embed(h, w)
        return self.norm(self.blocks(self.pos_drop(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x[:, 0]                                     # the class token: (B, D)
        return x if pre_logits else self.head(x)


_SIZES = {"ti": (192, 12, 3, 768), "s": (384, 12, 6, 1536), "b": (768, 12, 12, 3072),
          "l": (1024, 24, 16, 4096)}


def _vit(size: str, patch: int, num_classes: int, in_chans: int, small_input: bool,
         img_size: int | None, patch_size: int | None = None, **kwargs) -> VisionTransformer:
    """A ViT of the given size; ``patch_size`` overrides the patch (small inputs: 4x4, or 2x2
    below 16 pixels so that 8x8 digits still make a 4x4 grid)."""
    dim, depth, heads, mlp = _SIZES[size]
    if small_input:
        patch = 4 if (img_size or 32) >= 16 else 2
    patch = patch_size or patch
    img_size = img_size or (32 if small_input else 224)
    if img_size % patch:
        img_size = math.ceil(img_size / patch) * patch   # the position grid covers the image
    return VisionTransformer(img_size, patch, num_classes, in_chans, dim, depth, heads, mlp, **kwargs)


@register_model
def vit_ti_16(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
              img_size: int | None = None, **kwargs) -> VisionTransformer:
    """ViT-Ti/16 (DeiT-Ti): 5.7 M parameters."""
    return _vit("ti", 16, num_classes, in_chans, small_input, img_size, **kwargs)


@register_model
def vit_ti_32(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
              img_size: int | None = None, **kwargs) -> VisionTransformer:
    """ViT-Ti/32: 6.1 M parameters."""
    return _vit("ti", 32, num_classes, in_chans, small_input, img_size, **kwargs)


@register_model
def vit_s_16(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
             img_size: int | None = None, **kwargs) -> VisionTransformer:
    """ViT-S/16 (DeiT-S): 22.1 M parameters."""
    return _vit("s", 16, num_classes, in_chans, small_input, img_size, **kwargs)


@register_model
def vit_s_32(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
             img_size: int | None = None, **kwargs) -> VisionTransformer:
    """ViT-S/32: 22.9 M parameters."""
    return _vit("s", 32, num_classes, in_chans, small_input, img_size, **kwargs)


@register_model
def vit_b_16(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
             img_size: int | None = None, **kwargs) -> VisionTransformer:
    """ViT-B/16: 86.6 M parameters."""
    return _vit("b", 16, num_classes, in_chans, small_input, img_size, **kwargs)


@register_model
def vit_b_32(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
             img_size: int | None = None, **kwargs) -> VisionTransformer:
    """ViT-B/32: 88.2 M parameters."""
    return _vit("b", 32, num_classes, in_chans, small_input, img_size, **kwargs)


@register_model
def vit_l_16(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
             img_size: int | None = None, **kwargs) -> VisionTransformer:
    """ViT-L/16: 304.3 M parameters."""
    return _vit("l", 16, num_classes, in_chans, small_input, img_size, **kwargs)


@register_model
def vit_l_32(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
             img_size: int | None = None, **kwargs) -> VisionTransformer:
    """ViT-L/32: 306.5 M parameters."""
    return _vit("l", 32, num_classes, in_chans, small_input, img_size, **kwargs)


__all__ = ["Attention", "Block", "Mlp", "VisionTransformer"]
