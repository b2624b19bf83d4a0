"""Maximally activating patches: what a unit of a deep layer responds to in real data.

Run a data set through the network, keep for channel ``unit`` of ``layer`` the ``k`` images
where it fires hardest (at its best position in each), and crop from each image the receptive
field of the unit at that position, the only pixels it can see.  The receptive field (size,
jump, centre of unit 0) comes from :func:`vislab.analysis.summarize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vislab.analysis.summary import ReceptiveField, summarize
from vislab.errors import UserError
from vislab.explain.hooks import as_spatial, capture, inspecting


def channel_maps(model: nn.Module, images: Tensor, layer: str, unit: int,
                 batch_size: int = 256) -> Tensor:
    """The maps ``(N, h, w)`` of channel ``unit`` of ``layer`` over ``images``, in batches."""
    out = []
    with torch.no_grad(), inspecting(model), capture(model, [layer], keep_graph=False) as acts:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
            maps = as_spatial(acts[layer], images.shape[-2:])
            if not 0 <= unit < maps.shape[1]:
                raise UserError(f"unit {unit} does not exist: layer {layer!r} has {maps.shape[1]} "
                                f"channels (0..{maps.shape[1] - 1})")
            out.append(maps[:, unit].float().cpu())
    return torch.cat(out)


def receptive_field(model: nn.Module, layer: str, input_size: tuple[int, int, int]) -> ReceptiveField:
    """The receptive field of the units of ``layer``'s output (that of the last operation run
    inside the module)."""
    rows = [r for r in summarize(model, input_size).rows
            if r.name == layer or r.name.startswith(layer + ".")]
    if not rows:
        raise UserError(f"layer {layer!r} does no computation of its own; choose another --layer")
    rf = rows[-1].rf
    if not isinstance(rf, ReceptiveField):
        raise UserError(f"the units of {layer!r} see {'the whole image' if rf else 'no fixed window'}"
                        ": there is no patch to crop; choose an earlier convolutional --layer")
    return rf


def rf_box(rf: ReceptiveField, i: int, j: int) -> tuple[int, int, int, int]:
    """The window ``(x1, y1, x2, y2)`` in input pixels (pixel ``p`` spans ``[p, p+1)``) seen by
    the unit at row ``i``, column ``j``; it may reach past the image."""
    y1 = round(rf.start[0] + i * rf.jump[0] - (rf.size[0] - 1) / 2)
    x1 = round(rf.start[1] + j * rf.jump[1] - (rf.size[1] - 1) / 2)
    return x1, y1, x1 + rf.size[1], y1 + rf.size[0]


def crop(image: Tensor, box: tuple[int, int, int, int], fill: float = 0.0) -> Tensor:
    """``image[:, y1:y2, x1:x2]`` of a ``(C, H, W)`` image, with ``fill`` where the box leaves
    the image, so every crop of one field has the same size."""
    x1, y1, x2, y2 = box
    C, H, W = image.shape
    out = image.new_full((C, y2 - y1, x2 - x1), fill)
    sy, sx = slice(max(y1, 0), min(y2, H)), slice(max(x1, 0), min(x2, W))
    if sy.start < sy.stop and sx.start < sx.stop:
        out[:, sy.start - y1:sy.stop - y1, sx.start - x1:sx.stop - x1] = image[:, sy, sx]
    return out


@dataclass
class TopPatches:
    indices: Tensor        # (k,) images, strongest first
    values: Tensor         # (k,) the unit's activation there
    positions: Tensor      # (k, 2) row, column of the unit in the layer's map
    boxes: Tensor          # (k, 4) receptive-field windows in image pixels
    patches: Tensor        # (k, C, s_h, s_w) the windows' pixels


def top_patches(model: nn.Module, images: Tensor, layer: str, unit: int, k: int = 9,
                batch_size: int = 256, fill: float = 0.0) -> TopPatches:
    """The ``k`` images of ``images`` ``(N, C, H, W)`` where channel ``unit`` of ``layer`` has its
    highest activations (one position per image), with its receptive field cropped from each."""
    maps = channel_maps(model, images, layer, unit, batch_size)          # (N, h, w)
    best, where = maps.flatten(1).max(1)
    values, indices = best.topk(min(k, len(best)))
    w = maps.shape[2]
    positions = torch.stack([where[indices] // w, where[indices] % w], 1)
    rf = receptive_field(model, layer, tuple(images.shape[1:]))
    boxes = [rf_box(rf, int(i), int(j)) for i, j in positions]
    patches = torch.stack([crop(images[n].cpu(), b, fill) for n, b in zip(indices.tolist(), boxes)])
    return TopPatches(indices, values, positions, torch.tensor(boxes), patches)


__all__ = ["TopPatches", "channel_maps", "crop", "receptive_field", "rf_box", "top_patches"]
