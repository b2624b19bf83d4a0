"""The checkerboard artefact of transposed convolutions, as a figure: docs/images/checkerboard.png.

    .venv/bin/python benchmarks/fig_checkerboard.py            # writes docs/images/checkerboard.png
    .venv/bin/python benchmarks/fig_checkerboard.py --out x.png

Top row (:func:`vislab.models.upsample.checkerboard_maps`): how many products each output pixel
sums when a map is doubled by a 3x3 stride-2 transposed conv (1, 2 or 4: a checkerboard), by a
4x4 stride-2 one (an even 4 inside) and by a nearest x2 resize then a 3x3 conv (an even 9).
Bottom row: the same three on a constant image with random positive kernels, as a learned
kernel would be: the 3x3 transposed conv paints the checkerboard; the 4x4 one, although every
pixel sums 4 products, paints one too unless its taps happen to be balanced (each output parity
sees a different 2x2 subset of the kernel, Odena et al. 2016); resize-then-conv stays constant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from vislab.models.upsample import checkerboard_maps, conv_transpose2d_scatter

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "checkerboard.png"


def learned_looking(size: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A constant ``size x size`` image doubled three ways with random positive kernels."""
    g = torch.Generator().manual_seed(seed)
    image = torch.ones(1, 1, size, size)
    k3, k4 = torch.rand(1, 1, 3, 3, generator=g), torch.rand(1, 1, 4, 4, generator=g)
    resized = F.interpolate(image, scale_factor=2, mode="nearest")
    return {
        "transpose_k3_s2": conv_transpose2d_scatter(image, k3, stride=2, padding=1)[0, 0],
        "transpose_k4_s2": conv_transpose2d_scatter(image, k4, stride=2, padding=1)[0, 0],
        "resize_conv3": F.conv2d(resized, k3, padding=1)[0, 0],
    }


def _show(ax, img: torch.Tensor, title: str, numbers: bool) -> None:
    ax.imshow(img.numpy(), cmap="magma", interpolation="nearest")
    if numbers:
        for (r, c), v in zip(torch.cartesian_prod(torch.arange(img.shape[0]), torch.arange(img.shape[1])).tolist(),
                             img.flatten().tolist()):
            ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=6,
                    color="black" if v > img.max() * 0.6 else "white")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    counts, learned = checkerboard_maps(6), learned_looking()
    fig, axes = plt.subplots(2, 3, figsize=(12, 9))
    _show(axes[0, 0], counts["transpose_k3_s2"],
          "(a) 3x3 transposed conv, stride 2: products per pixel\n"
          "1, 2 or 4 (kernel not a multiple of the stride)", True)
    _show(axes[0, 1], counts["transpose_k4_s2"],
          "(b) 4x4 transposed conv, stride 2, padding 1\n"
          "an even 4 inside (kernel a multiple of the stride)", True)
    _show(axes[0, 2], counts["resize_conv3"],
          "(c) nearest x2, then 3x3 conv (padding 1)\n"
          "an even 9 inside: every pixel sees the same taps", True)
    _show(axes[1, 0], learned["transpose_k3_s2"],
          "(d) constant image, random 3x3 kernel,\ntransposed conv stride 2: checkerboard", False)
    _show(axes[1, 1], learned["transpose_k4_s2"],
          "(e) constant image, random 4x4 kernel, stride 2:\n"
          "each pixel parity sums a different 2x2 of taps", False)
    _show(axes[1, 2], learned["resize_conv3"],
          "(f) constant image, nearest x2 then the same\nrandom 3x3 conv: constant inside", False)
    fig.suptitle("Why transposed convolutions paint checkerboards (ones kernels above, random kernels below)")
    fig.tight_layout(h_pad=2.5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    plt.close(fig)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
