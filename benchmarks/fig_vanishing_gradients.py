"""The vanishing gradient, as a figure: docs/images/vanishing_gradients.png.

    .venv/bin/python benchmarks/fig_vanishing_gradients.py              # writes docs/images/vanishing_gradients.png
    .venv/bin/python benchmarks/fig_vanishing_gradients.py --out x.png --steps 150 --seed 1

The norm of the gradient of the last hidden state (projected on a random unit vector) with
respect to the input ``k`` steps back, against the lag ``k``, for freshly initialised one-layer
networks (:func:`vislab.sequence.rnn.gradient_norms_over_lag`, 64 hidden units): the simple RNN
(tanh), whose gradient BPTT multiplies by a contracting Jacobian at every step, and the LSTM,
whose cell state carries it on scaled by the forget gate alone (the constant error carousel,
003 "Recurrent Neural Networks"); the LSTM with its forget gate started open (bias 1) and with
torch's plain initialisation (forget gate near 0.5), and the GRU.  The printed ratio is the
gradient at lag 1 over the gradient at lag 50: how much BPTT loses over 49 steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from vislab.sequence.rnn import gradient_norms_over_lag

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "vanishing_gradients.png"

# label -> (cell, forget_bias)
CURVES = {
    "RNN (tanh)": ("rnn", None),
    "LSTM, forget-gate bias 1": ("lstm", 1.0),
    "LSTM, torch's initialisation": ("lstm", None),
    "GRU": ("gru", None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, (cell, forget_bias) in CURVES.items():
        norms = gradient_norms_over_lag(cell, steps=args.steps, seed=args.seed, forget_bias=forget_bias)
        ax.semilogy(np.arange(len(norms)), norms, label=label)
        print(f"{label:30s} |grad| lag 1 / lag 50 = {norms[1] / norms[50]:.3g}")
    ax.set_xlabel("time lag k")
    ax.set_ylabel("||d (u . h_T) / d x_{T-k}||")
    ax.set_title("Vanishing gradient through time (64 hidden units)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
