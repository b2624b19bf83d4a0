"""Random weights that make weight-copying tests able to fail."""

import torch
from torch import nn


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Uniform random weights, biases, norm parameters and running statistics, in place (the
    defaults, 0 and 1, would hide a swapped or misplaced mean and variance), scaled for
    unit-variance outputs; integer buffers zeroed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point():
                t.zero_()
            elif key.endswith("running_var"):
                t.uniform_(0.5, 1.5, generator=g)
            else:
                bound = 0.5 if t.ndim <= 1 else 3 ** 0.5 / t[0].numel() ** 0.5
                t.uniform_(-bound, bound, generator=g)
    return model
