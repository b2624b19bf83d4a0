"""Random boxes for the geometry tests, degenerate ones included."""

import torch


def random_boxes(n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` boxes on a 0..120 grid: a quarter with integer corners (ties), some with zero width,
    zero height or both, and some exact duplicates."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 80
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 40
    boxes = torch.cat((xy, xy + wh), dim=1)
    q = n // 4
    boxes[:q] = boxes[:q].round()
    boxes[q:q + 3, 2] = boxes[q:q + 3, 0]                 # zero width
    boxes[q + 3:q + 6, 3] = boxes[q + 3:q + 6, 1]         # zero height
    boxes[q + 6:q + 8, 2:] = boxes[q + 6:q + 8, :2]       # points
    boxes[-4:] = boxes[:4]                                 # duplicates
    return boxes
