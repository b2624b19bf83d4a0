"""Classic baselines on Fashion-MNIST: test accuracy and fit time of the perceptron and of kNN on
pixels (vislab's beside scikit-learn's) and of a bag of visual words with a linear SVM.

    .venv/bin/python -m benchmarks.bench_baselines                        # all 60,000 training images
    .venv/bin/python -m benchmarks.bench_baselines --limit-train 10000    # BoVW on a random subset
    .venv/bin/python -m benchmarks.bench_baselines --vocab 1024 --epochs 10

The perceptron learns one-vs-rest on the 784 pixels scaled to [0, 1], always on the whole
training set, for ``--epochs`` epochs: once in the order of the file, where vislab's and
scikit-learn's (``eta0=1, penalty=None, tol=None, shuffle=False``) must reach the same weights,
and once shuffled (each with its own shuffling, so the weights differ).  Bag of visual words:
``BagOfVisualWords``'s defaults (dense SIFT, 9x9 grid of 24-pixel windows on the image resized to
56x56, Hellinger-normalised histograms) with a ``--vocab``-word vocabulary, on ``--limit-train``
training images.  Every model is scored on the whole test set.

BLAS and OpenMP pools run ``--threads`` threads (default 1): on a shared 2-core machine
scikit-learn's k-means, OpenMP threads calling OpenBLAS threads, ran 6x slower on two threads than
on one.  The machine's fp32 sgemm (torch, its own threads) is measured before and after.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import Perceptron as SkPerceptron
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from benchmarks.common import measured_sgemm_gflops
from vislab.classic.bovw import BagOfVisualWords
from vislab.classic.perceptron import Perceptron
from vislab.data.datasets import load_split
from vislab.metrics.retrieval import knn_classify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-train", type=int, default=None, metavar="N",
                    help="train bag of visual words on N random training images (default: all)")
    ap.add_argument("--vocab", type=int, default=512, metavar="K", help="visual words (default 512)")
    ap.add_argument("--epochs", type=int, default=5, help="perceptron epochs (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1)")
    args = ap.parse_args()
    sgemm = measured_sgemm_gflops(5)
    train, test = load_split("fashion_mnist", "train"), load_split("fashion_mnist", "test")
    print(f"Fashion-MNIST: {len(train.labels)} training, {len(test.labels)} test images; BLAS/OpenMP "
          f"{args.threads} thread(s); torch {torch.get_num_threads()} threads, measured sgemm {sgemm:.0f} GFLOP/s (best of 5)")

    rows: list[tuple[str, int, float, float, float]] = []      # (model, training images, fit s, accuracy, predict s)

    def run(name: str, model, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray):
        """Fit ``model`` and score it on the test set, timing both."""
        t0 = time.perf_counter()
        model.fit(x_train, y_train)
        t1 = time.perf_counter()
        acc = model.score(x_test, test.labels)
        fit_s, pred_s = t1 - t0, time.perf_counter() - t1
        rows.append((name, len(y_train), fit_s, acc, pred_s))
        print(f"  {name}: {acc:.4f} in {fit_s:.1f} s", flush=True)
        return model

    x_train, x_test = (split.images.reshape(len(split.images), -1) / 255.0 for split in (train, test))
    with threadpool_limits(args.threads):
        e = args.epochs
        ours = run(f"perceptron, vislab, {e} epochs in order", Perceptron(max_epochs=e, shuffle=False), x_train, train.labels, x_test)
        ref = run(f"perceptron, sklearn, {e} epochs in order", SkPerceptron(max_iter=e, shuffle=False, tol=None), x_train, train.labels, x_test)
        print(f"  max |w_vislab - w_sklearn| = {np.abs(ours.coef_ - ref.coef_).max():.3g}, "
              f"|b| {np.abs(ours.intercept_ - ref.intercept_).max():.3g}")
        run(f"perceptron, vislab, {e} epochs shuffled", Perceptron(max_epochs=e, seed=0), x_train, train.labels, x_test)
        run(f"perceptron, sklearn, {e} epochs shuffled", SkPerceptron(max_iter=e, tol=None, random_state=0), x_train, train.labels, x_test)

        class KNN:       # vislab's kNN on pixels in the fit/score face of the others
            def fit(self, x, y):
                self.x, self.y = torch.from_numpy(x).float(), torch.from_numpy(y)
                return self

            def score(self, x, y):
                pred = knn_classify(self.x, self.y, torch.from_numpy(x).float(), k=5)
                return float((pred.numpy() == y).mean())
        run("kNN on pixels (k=5), vislab", KNN(), x_train, train.labels, x_test)
        run("kNN on pixels (k=5), sklearn", KNeighborsClassifier(5, algorithm="brute"), x_train, train.labels, x_test)

        n = min(args.limit_train or len(train.labels), len(train.labels))
        subset = np.sort(np.random.default_rng(0).choice(len(train.labels), n, replace=False))
        bovw = BagOfVisualWords(vocab_size=args.vocab)
        run(f"BoVW dense SIFT + LinearSVC, {args.vocab} words", bovw, train.images[subset], train.labels[subset], test.images)

    after = measured_sgemm_gflops(5)
    print("\n| model | training images | fit (s) | test accuracy | predict (s) |\n|---|---:|---:|---:|---:|")
    for name, n_train, fit_s, acc, pred_s in rows:
        print(f"| {name} | {n_train} | {fit_s:.1f} | {acc:.4f} | {pred_s:.1f} |")
    print(f"measured sgemm {sgemm:.0f} GFLOP/s before, {after:.0f} after; BoVW: "
          f"{len(bovw.vocabulary_)} words from ~{bovw.max_descriptors} descriptors, upscale {bovw.upscale}, "
          f"patch {bovw.patch}, step {bovw.step}, norm {bovw.norm}")


if __name__ == "__main__":
    main()
