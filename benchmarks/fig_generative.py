"""The generative family's figures for docs/generative.md and the README, from the runs of
``benchmarks/bench_generative.py`` (run it first).

    .venv/bin/python benchmarks/fig_generative.py                       # reads runs/bench_generative
    .venv/bin/python benchmarks/fig_generative.py --runs DIR --out docs/images

Writes ``generative_samples.png`` (64 samples each of AE latent sampling, the VAE and DCGAN, with
their FD), ``dcgan_training.png`` (the same noise through DCGAN's generator after each epoch),
``generative_interpolation.png`` (the VAE's and the AE's) and ``bigan_anomaly_maps.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _eval(run: Path) -> dict:
    return json.loads((run / "eval.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench_generative"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--anomaly-class", type=int, default=0)
    args = ap.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = [("AE, codes from the fitted Gaussian", runs / "init-ae"), ("VAE, N(0, I)", runs / "fd-vae"),
            ("DCGAN, N(0, I)", runs / "fd-dcgan")]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    for ax, (title, run) in zip(axes, rows):
        ev = _eval(run)
        ax.imshow(Image.open(run / "plots" / "samples.png"), cmap="gray")
        ax.set_title(f"{title}\nFD {ev['fd']:.2f} (floor {ev['fd_floor']:.2f})", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "generative_samples.png", dpi=110)

    grids = sorted((runs / "fd-dcgan" / "samples").glob("epoch_*.png"))
    fig, axes = plt.subplots(1, len(grids), figsize=(2.2 * len(grids), 2.5))
    for ax, g in zip(axes, grids):
        ax.imshow(Image.open(g), cmap="gray")
        ax.set_title(f"after epoch {int(g.stem.split('_')[1])}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "dcgan_training.png", dpi=110)

    shutil.copyfile(runs / "fd-vae" / "plots" / "interpolation.png", out / "generative_interpolation.png")
    shutil.copyfile(runs / f"oc-bigan-{args.anomaly_class}" / "plots" / "anomaly_maps.png", out / "bigan_anomaly_maps.png")
    for f in ("generative_samples.png", "dcgan_training.png", "generative_interpolation.png", "bigan_anomaly_maps.png"):
        print(os.path.join(out, f))


if __name__ == "__main__":
    main()
