"""Building blocks shared by the model families (each written once, here)."""

from __future__ import annotations

from torch import Tensor, nn


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation, with "same" padding for odd kernels.

    Args:
        in_chs / out_chs: channels; kernel_size, stride, groups, dilation: as in ``nn.Conv2d``.
        norm_layer / act_layer: classes (``None`` leaves the step out); the conv has a bias only
        when there is no norm after it.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, padding: int | None = None,
                 norm_layer: type[nn.Module] | None = nn.BatchNorm2d,
                 act_layer: type[nn.Module] | None = nn.ReLU) -> None:
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding,
                                             dilation=dilation, groups=groups,
                                             bias=norm_layer is None)]
        if norm_layer is not None:
            layers.append(norm_layer(out_chs))
        if act_layer is not None:
            layers.append(act_layer(inplace=True) if _takes_inplace(act_layer) else act_layer())
        super().__init__(*layers)
        self.out_channels = out_chs


def _takes_inplace(act_layer: type[nn.Module]) -> bool:
    return act_layer in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU)


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): channel gates from globally pooled features."""

    def __init__(self, chs: int, rd_chs: int, act_layer: type[nn.Module] = nn.ReLU,
                 gate_layer: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(chs, rd_chs, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd_chs, chs, 1)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W)
        s = x.mean((2, 3), keepdim=True)       # (B, C, 1, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


def init_weights(module: nn.Module, scheme: str = "he") -> None:
    """Initialise conv/linear weights: ``'he'`` (Kaiming, fan-out, for ReLU nets) or ``'xavier'``
    (Glorot, for tanh/sigmoid or linear models); biases to zero, norm layers to (1, 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif scheme == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}: use 'he' or 'xavier'")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without going below 90% of ``v`` (MobileNet)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


__all__ = ["ConvNormAct", "DropPath", "SqueezeExcite", "init_weights", "make_divisible"]
