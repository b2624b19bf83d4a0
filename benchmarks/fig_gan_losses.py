"""Why the generator maximises log D(G(z)), as a figure: docs/images/gan_losses.png.

    .venv/bin/python benchmarks/fig_gan_losses.py              # writes docs/images/gan_losses.png
    .venv/bin/python benchmarks/fig_gan_losses.py --out x.png

Left: the two generator losses of :func:`vislab.generative.losses.generator_loss` against the
discriminator's posterior D(G(z)) on a generated image: the minimax ``log(1 - D(G(z)))``
(``saturating``) and ``-log D(G(z))`` (``non_saturating``).  Right: the magnitude of their
gradient with respect to the discriminator's logit, by autograd.  Early in training D rejects
the samples (D(G(z)) near 0): there the minimax loss is flat (its gradient is D(G(z)) itself)
while the non-saturating one's is 1 - D(G(z)), close to 1 (003, "GAN training").  The printed
ratio is measured at D(G(z)) = 0.001.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from vislab.generative.losses import generator_loss

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "gan_losses.png"


def curves(n: int = 400) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """D(G(z)) on a grid and, per form, the loss and |d loss / d logit| at each point."""
    logits = torch.linspace(-9, 9, n, dtype=torch.float64)
    out = {}
    for form in ("saturating", "non_saturating"):
        a = logits.clone().requires_grad_(True)
        per_point = torch.stack([generator_loss(a[i:i + 1], form) for i in range(n)])
        per_point.sum().backward()
        out[form] = (per_point.detach(), a.grad.abs())
    return torch.sigmoid(logits), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    d, out = curves()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = {"saturating": "minimax: min log(1 - D(G(z)))", "non_saturating": "non-saturating: min -log D(G(z))"}
    for form, (loss, grad) in out.items():
        ax1.plot(d, loss, label=names[form])
        ax2.semilogy(d, grad, label=names[form])
    ax1.set_xlabel("D(G(z))")
    ax1.set_ylabel("generator loss")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("D(G(z))")
    ax2.set_ylabel("|gradient| w.r.t. the logit")
    ax2.axvspan(0, 0.1, color="0.9")
    ax2.text(0.02, 2e-3, "early training:\nD rejects G's samples", fontsize=7)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    a = torch.logit(torch.tensor([0.001], dtype=torch.float64))
    g = {}
    for form in out:
        x = a.clone().requires_grad_(True)
        generator_loss(x, form).backward()
        g[form] = float(x.grad.abs())
    print(f"at D(G(z)) = 0.001: |grad| minimax {g['saturating']:.4g}, non-saturating {g['non_saturating']:.4g} "
          f"({g['non_saturating'] / g['saturating']:.0f}x)")
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
