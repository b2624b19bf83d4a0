"""What every segmentation network shares: a registry backbone read stage by stage.

A segmentation model (registered with ``kind="segmentation"``) maps an image batch ``(B, C, H,
W)`` to per-pixel class scores ``(B, K, H, W)`` at the input's resolution, for any ``H, W`` (the
network is fully convolutional).  The FCNs and DeepLab stand on a classifier of the registry:
:class:`BackboneFeatures` runs its ``forward_features`` and returns the output of each stage that
``feature_info`` names, with its channels and stride, so that a head can fuse the coarse,
semantic maps of the last stage with the finer maps of earlier ones (the notes' "global
information resolves what, local information resolves where").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.registry import create_model, model_kind


class BackboneFeatures(nn.Module):
    """The stage outputs of a registry classifier.

    Args:
        name: a registered classifier with ``feature_info`` (``resnet18``, ``vgg16_bn``...).
        in_chans: input channels.
        stages: indices into ``feature_info`` to return (default: every stage), in that order.
        kwargs: passed to the classifier's factory (e.g. ``widths``, ``output_stride``).

    ``channels[i]`` and ``reductions[i]`` describe the ``i``-th returned map.  The classifier's
    head is dropped (``reset_classifier(0)``); ``forward`` returns a list of maps.
    """

    def __init__(self, name: str, in_chans: int = 3, stages: Sequence[int] | None = None, **kwargs) -> None:
        super().__init__()
        if model_kind(name) != "classifier":
            raise UserError(f"{name!r} is a {model_kind(name)} model; a backbone must be a classifier "
                            "(e.g. resnet18): run `vislab models` to list them")
        body = create_model(name, num_classes=0, in_chans=in_chans, **kwargs)
        info = getattr(body, "feature_info", None)
        if not info:
            raise UserError(f"{name!r} does not list its stages (feature_info) and cannot be a "
                            "segmentation backbone: choose a CNN such as resnet18 or vgg11_bn")
        stages = list(range(len(info))) if stages is None else [s % len(info) for s in stages]
        self.body = body
        self.modules_ = [info[s]["module"] for s in stages]
        self.channels = [info[s]["num_chs"] for s in stages]
        self.reductions = [info[s]["reduction"] for s in stages]
        self._outs: dict[str, Tensor] = {}
        for m in dict.fromkeys(self.modules_):
            body.get_submodule(m).register_forward_hook(self._keep(m))

    def stages_at(self, strides: Sequence[int], name: str = "the backbone") -> list[int]:
        """For each stride, the index of the last returned map with that reduction (a detector's
        pyramid levels); a stride no stage has is refused in one line naming those it has."""
        out = []
        for s in strides:
            if s not in self.reductions:
                raise UserError(f"stride {s} is not one of {name}'s stages {sorted(set(self.reductions))}: "
                                "choose model.kwargs.strides among them")
            out.append(max(i for i, r in enumerate(self.reductions) if r == s))
        return out

    def _keep(self, name: str):
        def hook(module: nn.Module, args, out: Tensor) -> None:
            self._outs[name] = out
        return hook

    def forward(self, x: Tensor) -> list[Tensor]:
        self._outs = {}
        self.body.forward_features(x)
        outs, self._outs = [self._outs[m] for m in self.modules_], {}
        return outs


def resize_to(x: Tensor, size: Sequence[int], mode: str = "bilinear") -> Tensor:
    """``x`` resized to ``size`` (``(H, W)``): bilinear for scores (``align_corners=False``, as
    torchvision's segmentation models), nearest for label maps."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


__all__ = ["BackboneFeatures", "resize_to"]
