"""Fully convolutional networks: FCN-32s, FCN-16s, FCN-8s (Long, Shelhamer, Darrell 2015).

A classifier's stages, read as maps (:class:`~vislab.models.segmentation.BackboneFeatures`), and
a 1x1 conv that scores every class at every position of the stride-32 map.  FCN-32s upsamples
those scores x32 at once: coarse, since each score stands for a 32x32 block.  FCN-16s adds a
score map of the stride-16 stage to the x2-upsampled coarse scores ("global information
resolves what, local information resolves where") and upsamples the sum x16; FCN-8s fuses the
stride-8 stage the same way and upsamples x8.  The skip score layers start at zero (paper,
Sec. 4.2), so a fresh FCN-16s computes exactly what FCN-32s does and training refines it.

Upsampling: :class:`~vislab.models.upsample.BilinearUpsample`.  As in the paper (Sec. 4.3) the
x2 fusion layers start bilinear and are learned, the final one stays a fixed bilinear
interpolation; ``learn_upsampling=False`` fixes them all.

Alignment.  The backbone's strided convs and pools have odd kernels padded by ``(k - 1) // 2``
(ResNet's 7x7/2 stem, 3x3/2 pool and convs, 1x1/2 shortcuts), so each halving maps ``n`` pixels
to ``ceil(n / 2)`` and puts output pixel ``j`` over input pixel ``2 j``: the stride-``s`` map
has ``ceil(H / s)`` rows and its row ``j`` lies on image row ``s * j``.  The upsampling uses the
same grid (``align_corners=True``: coarse pixel ``j`` lands on fine pixel ``f * j``), so the
upsampled map and the finer map share their first row and column, and the right crop is the
top-left one; the upsampled map (``f * ceil(H / s)`` rows) covers the finer one
(``ceil(H / (s / f))`` rows), and the final map (``s * ceil(H / s)`` rows) covers the image.
(The half-pixel kernel of ``align_corners=False`` would put coarse pixel ``j`` at fine
``f * j + (f - 1) / 2``: a shift of half a fine pixel at each x2 and 3.5 image pixels at the
final x8, which no integer crop undoes for an even ``f``.)  Before upsampling, each map is extended
by one replicated row and column at the bottom and right, so that the fine pixels past the
last coarse one repeat its score instead of fading to zero, as ``F.interpolate`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.registry import register_model
from vislab.models.segmentation import BackboneFeatures
from vislab.models.upsample import BilinearUpsample

STRIDES = (32, 16, 8)          # the stages FCN reads, coarse to fine


def upsample_crop(up: BilinearUpsample, x: Tensor, size: Sequence[int]) -> Tensor:
    """``x`` upsampled by ``up`` (``align_corners=True``) and cropped top-left to ``size``.

    Fine pixel ``o`` lies on coarse coordinate ``o / factor`` (see the module docstring); a
    replicated row and column at the bottom and right keep the pixels past the last coarse one
    at its value.  Raises ``ValueError`` when ``x`` upsampled is smaller than ``size``.
    """
    h, w = int(size[0]), int(size[1])
    if x.shape[-2] * up.factor < h or x.shape[-1] * up.factor < w:
        raise ValueError(f"a {tuple(x.shape[-2:])} map upsampled x{up.factor} cannot cover {(h, w)}")
    x = up(F.pad(x, (0, 1, 0, 1), mode="replicate"))   # (B, K, f (h' + 1), f (w' + 1))
    return x[..., :h, :w]


class FCN(nn.Module):
    """FCN-32s, -16s or -8s on a registry backbone.

    Args:
        num_classes / in_chans: classes (background included) and input channels.
        output_stride: 32, 16 or 8: the stride of the finest stage fused (FCN-32s/16s/8s).
        backbone: a registered classifier whose ``feature_info`` has stages of stride 32 (and 16,
            8 as the variant needs), e.g. ``resnet18``.
        backbone_kwargs: passed to the backbone's factory (``{"widths": [32, 64, 128, 256]}``).
        learn_upsampling: learn the x2 fusion upsamplings (from bilinear); the final one is a
            fixed bilinear interpolation either way.

    ``forward(x)``: ``(B, in_chans, H, W)`` -> logits ``(B, num_classes, H, W)`` for any ``H, W``
    (nothing is padded; the maps are ``ceil(H / s)`` and each upsampled map is cropped top-left,
    the last one to ``H x W``).
    """

    def __init__(self, num_classes: int = 21, in_chans: int = 3, output_stride: int = 32,
                 backbone: str = "resnet18", backbone_kwargs: dict | None = None,
                 learn_upsampling: bool = True) -> None:
        super().__init__()
        if output_stride not in STRIDES:
            raise UserError(f"FCN output_stride must be one of {STRIDES}, got {output_stride!r}")
        strides = [s for s in STRIDES if s >= output_stride]          # e.g. [32, 16] for FCN-16s
        self.backbone = BackboneFeatures(backbone, in_chans, **(backbone_kwargs or {}))
        reductions = self.backbone.reductions
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise UserError(f"FCN-{output_stride}s reads stages of stride {strides}, but backbone "
                            f"{backbone!r} has strides {reductions} (no {missing}): use a CNN that "
                            "halves five times, e.g. resnet18 without small_input or output_stride")
        # the last (deepest) stage at each stride
        self.stage_ids = [len(reductions) - 1 - reductions[::-1].index(s) for s in strides]
        self.scores = nn.ModuleList(nn.Conv2d(self.backbone.channels[i], num_classes, 1)
                                    for i in self.stage_ids)
        self.ups = nn.ModuleList(BilinearUpsample(num_classes, 2, learn_upsampling, align_corners=True)
                                 for _ in strides[1:])
        self.up_final = BilinearUpsample(num_classes, output_stride, learnable=False, align_corners=True)
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.init_weights()

    def init_weights(self) -> None:
        """Score layers to zero (paper, Sec. 4.3: random initialisation gave neither better
        results nor faster convergence); for the skip layers this makes a fresh FCN-16s/8s equal
        to FCN-32s.  The backbone keeps its own initialisation, the upsamplings are bilinear."""
        for score in self.scores:
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, K, H, W)
        feats = self.backbone(x)                                       # maps at H/4 .. H/32
        score = self.scores[0](feats[self.stage_ids[0]])              # (B, K, H/32, W/32)
        for i, up, score_layer in zip(self.stage_ids[1:], self.ups, self.scores[1:]):
            skip = score_layer(feats[i])                               # (B, K, 2h, 2w)
            score = skip + upsample_crop(up, score, skip.shape[-2:])
        return upsample_crop(self.up_final, score, x.shape[-2:])


@register_model(kind="segmentation")
def fcn32s(num_classes: int = 21, in_chans: int = 3, backbone: str = "resnet18",
           backbone_kwargs: dict | None = None, learn_upsampling: bool = True) -> FCN:
    """FCN-32s: scores of the stride-32 stage, upsampled x32 (bilinear, fixed)."""
    return FCN(num_classes, in_chans, 32, backbone, backbone_kwargs, learn_upsampling)


@register_model(kind="segmentation")
def fcn16s(num_classes: int = 21, in_chans: int = 3, backbone: str = "resnet18",
           backbone_kwargs: dict | None = None, learn_upsampling: bool = True) -> FCN:
    """FCN-16s: FCN-32s's scores x2 plus the stride-16 stage's, upsampled x16."""
    return FCN(num_classes, in_chans, 16, backbone, backbone_kwargs, learn_upsampling)


@register_model(kind="segmentation")
def fcn8s(num_classes: int = 21, in_chans: int = 3, backbone: str = "resnet18",
          backbone_kwargs: dict | None = None, learn_upsampling: bool = True) -> FCN:
    """FCN-8s: FCN-16s's fused scores x2 plus the stride-8 stage's, upsampled x8."""
    return FCN(num_classes, in_chans, 8, backbone, backbone_kwargs, learn_upsampling)


__all__ = ["FCN", "STRIDES", "fcn8s", "fcn16s", "fcn32s", "upsample_crop"]
