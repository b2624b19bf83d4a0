"""Autoencoders, the VAE, DCGAN and BiGAN on Fashion-MNIST, measured (issue 15, docs/generative.md).

    python -m benchmarks.bench_generative                    # every part (about an hour on 2 cores)
    python -m benchmarks.bench_generative --part sweep       # one part: sweep | init | fd | oneclass
    python -m benchmarks.bench_generative --quick            # smoke run (minutes)
    python -m benchmarks.bench_generative --device cuda      # on a GPU

Parts, each trained by ``vislab train RECIPE`` and scored by ``vislab evaluate`` (the recipes'
own settings unless said):
- ``sweep``: the convolutional AE and the VAE with latent sizes 2, 8, 32, 128 (20,000 training
  images, 5 epochs each): reconstruction MSE on training and test images, and the Fréchet
  distance (FD) of images decoded from latent samples (AE: a Gaussian fitted to its training
  codes; VAE: N(0, I)), the notes' claim that sampling an AE's latent space fails as it grows.
- ``init``: the notes' "AE for classifier initialization": the convolutional and the dense AE
  (latent 32) on every training image, then the encoder + a linear layer trained on 10 / 100 /
  1,000 labelled images per class, frozen or fine-tuned, against the same classifier from random
  init; the same number of optimizer steps for every run; test accuracy over 3 seeds.
- ``fd``: FD of AE latent sampling, the VAE and DCGAN samples against the test images, with the
  floor (two halves of the test set), the FD classifier's confidence and class diversity.
- ``oneclass``: one-class anomaly detection, each Fashion-MNIST class in turn the normal one:
  BiGAN's three scores (latent likelihood, discriminator posterior, reconstruction through
  G(E(s))) and the AE's reconstruction error, AUROC on the whole test set.
The FD features are the penultimate layer of vislab's own Fashion-MNIST classifier (the default
recipe, 4 epochs; trained once into ``$VISLAB_CACHE``).  The machine's sgemm is printed beside
the timings.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import torch

from benchmarks.common import measured_sgemm_gflops, run_parts, train_and_evaluate
from vislab.data.datasets import load_split
from vislab.generative.losses import reconstruction_error
from vislab.tasks import load_run
from vislab.tasks.base import inference
from vislab.tasks.runner import evaluate

LATENTS = (2, 8, 32, 128)
LABELS_PER_CLASS = (10, 100, 1000)
INIT_STEPS = 600


def run(recipe: str, overrides: list[str], run_dir: str, args) -> tuple[dict, float]:
    return train_and_evaluate(recipe, overrides, run_dir, args.device, args.reuse)


def train_mse(run_dir: str, device: str, n: int = 10000) -> float:
    """Reconstruction MSE per pixel on the first ``n`` training images."""
    r = load_run(run_dir, device)
    x = r.norm.from_uint8(load_split("fashion_mnist", "train").images[:n], r.device)
    with inference(r.model):
        rec = torch.cat([r.model.reconstruct(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    return float(reconstruction_error(rec, x, "mse").mean())


def part_sweep(args) -> list[dict]:
    rows = []
    print(f"\n== sweep: latent size ({args.sweep_train} training images, {args.sweep_epochs} epochs each) ==")
    print("FD of decoded samples; the AE's codes drawn from N(0, I) (nothing known of them), from the diagonal of a "
          "Gaussian fitted to its training codes, and from the full fitted Gaussian; the VAE's from N(0, I)")
    print(f"{'model':8s} {'latent':>6s} {'train MSE':>10s} {'test MSE':>9s} {'FD N(0,I)':>10s} {'FD diag':>8s} "
          f"{'FD full':>8s} {'floor':>6s} {'conf':>5s} {'time s':>7s}")
    for model in ("conv_ae", "vae"):
        for d in args.latents:
            recipe = "ae" if model == "conv_ae" else "vae"
            rd = os.path.join(args.out, f"sweep-{model}-{d}")
            ev, t = run(recipe, [f"model.kwargs.latent_dim={d}", f"data.limit_train={args.sweep_train}",
                                 f"train.epochs={args.sweep_epochs}", f"generative.eval_samples={args.samples}"], rd, args)
            if model == "conv_ae" and "fd_by_prior" not in ev:        # evaluated by an older vislab: again
                ev = {**evaluate(rd, device=args.device), "train_time_s": t}
            by = ev.get("fd_by_prior", {"standard": ev["fd"], "diagonal": ev["fd"], "full": ev["fd"]})
            row = {"model": model, "latent": d, "train_mse": train_mse(rd, args.device), "test_mse": ev["recon_mse"],
                   "fd_standard": by["standard"], "fd_diagonal": by["diagonal"], "fd_full": by["full"],
                   "fd_floor": ev["fd_floor"], "confidence": ev["samples_confidence"], "time_s": t}
            rows.append(row)
            cols = (f"{row['fd_standard']:10.2f} {row['fd_diagonal']:8.2f} {row['fd_full']:8.2f}" if model == "conv_ae"
                    else f"{row['fd_standard']:10.2f} {'-':>8s} {'-':>8s}")
            print(f"{model:8s} {d:6d} {row['train_mse']:10.4f} {row['test_mse']:9.4f} {cols} "
                  f"{row['fd_floor']:6.2f} {row['confidence']:5.2f} {t:7.0f}", flush=True)
    return rows


AE_ARCHS = {                    # autoencoder -> (its classifier, model.kwargs of both)
    "conv_ae": ("conv_ae_encoder", "{latent_dim: 32, width: 32}"),
    "dense_ae": ("dense_ae_encoder", "{latent_dim: 32, hidden: [512, 256]}"),
}


def part_init(args) -> list[dict]:
    print(f"\n== init: AE-initialised classifier (latent 32; {INIT_STEPS} optimizer steps per run; test accuracy, "
          f"mean ± std over seeds {', '.join(map(str, args.seeds))}) ==")
    rows = []
    for ae, (clf, kwargs) in AE_ARCHS.items():
        ae_dir = os.path.join(args.out, "init-ae" if ae == "conv_ae" else f"init-{ae}")
        ev, t = run("ae", [f"model.name={ae}", f"model.kwargs={kwargs}", f"train.epochs={args.ae_epochs}",
                           f"generative.eval_samples={args.samples}"], ae_dir,
                    argparse.Namespace(**{**vars(args), "reuse": True}))
        print(f"{ae}: test MSE {ev['recon_mse']:.4f}, trained in {t:.0f}s ({args.ae_epochs} epochs, every training "
              "image, no label)")
        print(f"  {'labels/class':>12s} {'random init':>14s} {'AE frozen':>14s} {'AE fine-tuned':>14s}")
        for k in args.labels:
            n = 10 * k
            batch = min(64, max(16, n // 10))
            epochs = max(1, math.ceil(INIT_STEPS / max(1, n // batch)))
            base = [f"model.name={clf}", f"model.kwargs={kwargs}", f"data.per_class={k}", f"train.batch_size={batch}",
                    f"train.epochs={epochs}", "data.val_size=1000"]
            accs: dict[str, list[float]] = {}
            for name, extra in (("random", []), ("frozen", [f"model.init_from={ae_dir}", "train.freeze=backbone"]),
                                ("finetune", [f"model.init_from={ae_dir}"])):
                for seed in args.seeds:
                    e, _ = run("ae_classifier", [*base, *extra, f"seed={seed}"],
                               os.path.join(args.out, f"init-{ae}-{k}-{name}-s{seed}"), args)
                    accs.setdefault(name, []).append(e["top1"])
            rows.append({"ae": ae, "per_class": k, **{m: v for m, v in accs.items()}})
            cell = {m: f"{np.mean(v) * 100:6.2f} ± {np.std(v) * 100:4.2f}" for m, v in accs.items()}
            print(f"  {k:12d} {cell['random']:>14s} {cell['frozen']:>14s} {cell['finetune']:>14s}", flush=True)
    return rows


def part_fd(args) -> list[dict]:
    print(f"\n== fd: samples against the test images ({args.samples} generated images) ==")
    rows = []
    for name, recipe, extra in (("AE latent sampling", "ae", [f"train.epochs={args.ae_epochs}"]),
                                ("VAE", "vae", [f"train.epochs={args.ae_epochs}"]),
                                ("DCGAN", "dcgan", [f"train.epochs={args.gan_epochs}"])):
        # the AE is the one the init part trains (same recipe and budget): evaluated once
        rd = os.path.join(args.out, "init-ae" if recipe == "ae" else f"fd-{recipe}")
        ev, t = run(recipe, [*extra, f"generative.eval_samples={args.samples}"], rd,
                    argparse.Namespace(**{**vars(args), "reuse": args.reuse or recipe == "ae"}))
        if recipe == "ae" and "fd_by_prior" not in ev:          # evaluated by an older vislab: again
            ev = {**evaluate(rd, device=args.device), "train_time_s": t}
        rows.append({"model": name, "fd": ev["fd"], "fd_floor": ev["fd_floor"], "confidence": ev["samples_confidence"],
                     "diversity": ev["samples_class_entropy"], "time_s": t})
        if recipe == "ae":
            rows.append({"model": "AE, N(0, I) codes", "fd": ev["fd_by_prior"]["standard"], "fd_floor": ev["fd_floor"],
                         "confidence": float("nan"), "diversity": float("nan"), "time_s": t})
    print(f"{'model':20s} {'FD':>8s} {'confidence':>10s} {'diversity':>9s} {'train s':>8s}")
    for r in rows:
        print(f"{r['model']:20s} {r['fd']:8.2f} {r['confidence']:10.3f} {r['diversity']:9.3f} {r['time_s']:8.0f}")
    print(f"{'floor (test halves)':20s} {rows[0]['fd_floor']:8.2f}")
    return rows


def part_oneclass(args) -> list[dict]:
    classes = load_split("fashion_mnist", "test").classes
    print(f"\n== oneclass: AUROC, each class the normal one (BiGAN {args.bigan_epochs} epochs, AE {args.oc_ae_epochs}) ==")
    print(f"{'normal class':14s} {'BiGAN latent':>12s} {'BiGAN D':>8s} {'BiGAN rec':>9s} {'AE rec':>7s} {'BiGAN s':>8s} {'AE s':>6s}")
    rows = []
    for c in args.classes:
        b, tb = run("bigan", [f"generative.normal_class={c}", f"train.epochs={args.bigan_epochs}",
                              f"generative.eval_samples={args.oc_samples}"], os.path.join(args.out, f"oc-bigan-{c}"), args)
        a, ta = run("ae", [f"generative.normal_class={c}", f"train.epochs={args.oc_ae_epochs}", "data.val_size=500",
                           f"generative.eval_samples={args.oc_samples}"], os.path.join(args.out, f"oc-ae-{c}"), args)
        row = {"class": classes[c], "bigan_latent": b["auroc"]["latent"], "bigan_discriminator": b["auroc"]["discriminator"],
               "bigan_reconstruction": b["auroc"]["reconstruction"], "ae_reconstruction": a["auroc"]["reconstruction"],
               "bigan_s": tb, "ae_s": ta}
        rows.append(row)
        print(f"{classes[c]:14s} {row['bigan_latent']:12.3f} {row['bigan_discriminator']:8.3f} "
              f"{row['bigan_reconstruction']:9.3f} {row['ae_reconstruction']:7.3f} {tb:8.0f} {ta:6.0f}", flush=True)
    keys = ("bigan_latent", "bigan_discriminator", "bigan_reconstruction", "ae_reconstruction")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    print(f"{'mean':14s} " + " ".join(f"{mean[k]:{w}.3f}" for k, w in zip(keys, (12, 8, 9, 7))))
    rows.append({"class": "mean", **mean})
    return rows


PARTS = {"sweep": part_sweep, "init": part_init, "fd": part_fd, "oneclass": part_oneclass}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", nargs="+", choices=list(PARTS), default=list(PARTS))
    ap.add_argument("--out", default="runs/bench_generative", help="run directories and results.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reuse", action="store_true", help="skip runs that already have eval.json")
    ap.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run")
    ap.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    args = ap.parse_args()
    args.latents, args.labels, args.seeds = LATENTS, LABELS_PER_CLASS, (0, 1, 2)
    args.sweep_train, args.sweep_epochs, args.ae_epochs, args.gan_epochs = 20000, 5, 6, 5
    args.bigan_epochs, args.oc_ae_epochs, args.samples, args.oc_samples = 20, 10, 5000, 1000
    if args.quick:
        args.latents, args.labels, args.classes, args.seeds = (2, 32), (10, 100), args.classes[:2], (0,)
        args.sweep_train, args.sweep_epochs, args.ae_epochs, args.gan_epochs = 3000, 1, 1, 1
        args.bigan_epochs, args.oc_ae_epochs, args.samples, args.oc_samples = 1, 1, 1000, 500
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"sgemm {measured_sgemm_gflops(3):.0f} GFLOP/s")
    subset = "" if args.classes == list(range(10)) or "oneclass" not in args.part else "-" + "-".join(map(str, args.classes))
    run_parts(PARTS, args, subset)


if __name__ == "__main__":
    main()
