"""The generative task: autoencoders, the VAE, DCGAN and BiGAN on an image data set, trained
without labels by the one engine, and measured (003, "Autoencoders" to "BiGANs").

Training: images on the ``[0, 1]`` scale (no standardisation: decoders and generators give
images on that scale back), labels kept only for the one-class protocol and the report.  Each
model kind trains with its own step (:mod:`vislab.generative.training`): the AE reconstructs
(the notes' L2 reconstruction loss by default, a sparse or denoising regulariser as options),
the VAE minimises the negative ELBO, the GANs alternate discriminator and generator updates.
``best.pt``: lowest validation loss for the autoencoders; the last epoch for the GANs, whose
losses do not measure their samples (``train.monitor: last``).  GANs and the VAE draw a grid
from the same fixed noise after every epoch into ``RUN/samples/epoch_NNN.png``.

Evaluation (``eval.json``):
- reconstruction error on the test images (MSE per pixel and the L2 norm per image);
- generated images: the AE decodes codes drawn from a Gaussian fitted to its training codes
  (the notes' "sampling the latent space"), the VAE and the GANs from ``N(0, I)``; their
  Fréchet distance (FD) to the test images in the penultimate features of a vislab-trained
  classifier of the same data set (Inception's weights cannot be downloaded here), against the
  floor of the FD between two halves of the test set, both on the same number of images; the
  classifier's mean confidence and class histogram of the samples;
- one-class runs (``generative.normal_class``): AUROC on the whole test set, the other classes
  anomalous, of each anomaly score the model has: reconstruction error (AE, VAE, BiGAN's
  ``G(E(s))``), latent likelihood ``-log N(E(s); 0, I)`` and discriminator posterior
  ``1 - D(s, E(s))`` (BiGAN), ``1 - D(s)`` (DCGAN).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from vislab.config import Config, load_config
from vislab.data.datasets import ArrayDataset, checksum_warning, load_split
from vislab.data.info import DataInfo, Normalization
from vislab.data.subsets import keep_classes
from vislab.engine.hooks import LAST, Hook
from vislab.errors import UserError
from vislab.generative.latent import Gaussian, interpolate
from vislab.generative.losses import (
    kl_standard_normal,
    reconstruction_error,
    reconstruction_loss,
    vae_loss,
)
from vislab.generative.training import ae_objective, step_for
from vislab.io import atomic_torch_save, atomic_write_text
from vislab.metrics.generative import classifier_confidence, fid_from_features, roc_auc
from vislab.report import html as H
from vislab.report.plots import (
    heatmap_overlay,
    plot_bars,
    plot_image_rows,
    save_image_grid,
)
from vislab.tasks.base import (
    DataBundle,
    Section,
    create_kind_model,
    inference,
    register_task,
    shuffled_batches,
)
from vislab.tasks.classification import images_to_input, split_train_val
from vislab.tasks.trained import TrainedRun, load_run

GRID = 64                      # images in a sample grid
FEATURE_RECIPE = ["train.epochs=4"]   # the default recipe, shortened: vislab's own FD features
PRIOR_NAMES = {"full": "Gaussian fitted to the training codes", "diagonal": "the fitted Gaussian's diagonal",
               "standard": "N(0, I), nothing known of the codes"}


def unit_scale(in_chans: int) -> Normalization:
    """Inputs on the ``[0, 1]`` scale, as the decoders and generators give images back."""
    return Normalization((0.0,) * in_chans, (1.0,) * in_chans)


def model_type(model: nn.Module) -> str:
    """``ae``, ``vae``, ``gan`` or ``bigan``."""
    return model.kind


def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> Tensor:
    """``fn`` over ``x`` in chunks, results concatenated on the CPU as float32."""
    return torch.cat([fn(x[i:i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)]) if len(x) else x


# --------------------------------------------------------------------------------------- task
class GenerativeTask:
    name = "generative"
    augment = False
    monitor = "val_loss"

    def build_data(self, cfg: Config, device: torch.device, val_indices: np.ndarray | None = None) -> DataBundle:
        """Training images on ``[0, 1]``, split into train and validation; only the images of
        ``generative.normal_class`` for a one-class run."""
        if cfg.data.classes is not None or cfg.data.per_class is not None:
            raise UserError("the generative task trains on every image (or on generative.normal_class for the "
                            "one-class protocol); drop data.classes and data.per_class")
        warning = checksum_warning(cfg.data.name, cfg.data.root)
        full = load_split(cfg.data.name, "train", cfg.data.root, cfg.data.download)
        data = full
        if cfg.data.limit_train is not None:
            data = ArrayDataset(data.images[:cfg.data.limit_train], data.labels[:cfg.data.limit_train],
                                data.classes, data.source)
        normal = cfg.generative.normal_class
        notes = [f"warning: {warning}"] if warning else []
        if normal is not None:
            if not 0 <= normal < len(full.classes):
                raise UserError(f"generative.normal_class={normal} is not a class of {cfg.data.name}: "
                                f"use 0..{len(full.classes) - 1} ({', '.join(full.classes)})")
            data = keep_classes(data, [normal])
            notes.append(f"one-class protocol: training on {full.classes[normal]} only; the test set's other "
                         "classes are the anomalies")
        x, y = data.images, data.labels
        if x.shape[2] % 4 or x.shape[3] % 4:
            raise UserError(f"{cfg.data.name} images are {x.shape[2]}x{x.shape[3]}; the generative models need "
                            "sides divisible by 4")
        tr, va = split_train_val(len(y), cfg, val_indices)
        norm = unit_scale(int(x.shape[1]))
        info = DataInfo(cfg.data.name, tuple(full.classes), int(x.shape[1]), (int(x.shape[2]), int(x.shape[3])),
                        norm, {"normal_class": normal})
        labels = torch.from_numpy(y if normal is None else np.full_like(y, normal)).long()
        cl = cfg.train.channels_last
        return DataBundle(norm.from_uint8(x[tr], device, cl), labels[tr].to(device),
                          norm.from_uint8(x[va], device, cl), labels[va].to(device), info, notes)

    def train_loader(self, cfg: Config, data: DataBundle, gen: torch.Generator):
        return shuffled_batches(cfg, data, gen, augment=False)

    def build_model(self, cfg: Config, info: DataInfo) -> nn.Module:
        """A generative model of the registry sized for the images; GANs keep their last epoch
        (``train.monitor: last``) unless the recipe names a monitor."""
        if info.image_size[0] != info.image_size[1]:
            raise UserError(f"the generative models take square images; {info.dataset} has {info.image_size}")
        model = create_kind_model(cfg, "generative", self.name, info.num_classes, info.in_chans,
                                  img_size=info.image_size[0])
        if model_type(model) in ("gan", "bigan") and cfg.train.monitor is None:
            cfg.train.monitor = LAST
        model.recon_loss = cfg.generative.recon_loss      # validation measures what training minimises
        model.beta = cfg.generative.beta
        return model

    def loss(self, cfg: Config, model: nn.Module):
        """The objective of an autoencoder or the VAE, ``loss(output, images)`` (what their
        :meth:`train_step` minimises).  A GAN has no single loss: its step alternates two, and
        the function returned for it refuses to be called."""
        kind = model_type(model)
        if kind == "ae":
            objective = ae_objective(cfg.generative)
            return lambda out, x: objective(out, x)[0]
        if kind == "vae":
            return lambda out, x: vae_loss(out.logits.float(), x, out.mu.float(), out.logvar.float(), cfg.generative.beta)

        def no_single_loss(out, x):
            raise TypeError(f"a {kind} trains by alternating updates (train_step), not by one loss")
        return no_single_loss

    def train_step(self, cfg: Config, model: nn.Module):
        """The trainer's ``step_fn``: every generative model trains with its own step (the
        autoencoders too: their target is the clean image, not the label)."""
        return step_for(model_type(model), cfg.generative)

    def training_hooks(self, cfg: Config, run_dir: str, info: DataInfo, device: torch.device) -> list[Hook]:
        """Fixed-noise sample grids after every epoch (VAE and GANs)."""
        return [SampleGridHook(os.path.join(run_dir, "samples"), cfg.seed)]

    def correct(self, out, target: Tensor) -> None:
        return

    def validate(self, model: nn.Module, loader, amp_dtype=None) -> dict[str, float]:
        """Autoencoders: ``val_loss`` (the reconstruction loss of training, on clean inputs, without
        the L1 term; the VAE's negative ELBO at the posterior mean) and ``val_mse``.
        GANs: the discriminator's mean posterior on validation images (``val_d_real``) and on
        as many generated ones (``val_d_fake``); BiGAN also ``val_mse`` of ``G(E(s))``."""
        kind = model_type(model)
        x = loader.images
        bs = loader.batch_size
        gen = torch.Generator(device=x.device).manual_seed(0)
        out: dict[str, float] = {}
        with inference(model, amp_dtype):
            if kind in ("ae", "vae"):
                total = mse = 0.0
                for i in range(0, len(x), bs):
                    xb = x[i:i + bs]
                    o = model(xb)
                    if kind == "vae":
                        total += float(vae_loss(o.logits.float(), xb, o.mu.float(), o.logvar.float(), model.beta)) * len(xb)
                    else:
                        total += float(reconstruction_loss(o.logits.float(), xb, model.recon_loss)) * len(xb)
                    mse += float(reconstruction_error(torch.sigmoid(o.logits.float()), xb, "mse").sum())
                return {"val_loss": total / len(x), "val_mse": mse / len(x)}
            z = torch.randn(len(x), model.latent_dim, generator=gen, device=x.device)
            if kind == "gan":
                real = batched(lambda b: torch.sigmoid(model.discriminator(b)), x, bs)
                fake = batched(lambda b: torch.sigmoid(model.discriminator(model.generator(b))), z, bs)
            else:
                real = batched(lambda b: torch.sigmoid(model.discriminator(b, model.encoder(b))), x, bs)
                fake = torch.cat([torch.sigmoid(model.discriminator(model.generator(z[i:i + bs]), z[i:i + bs])).cpu()
                                  for i in range(0, len(z), bs)])
                out["val_mse"] = float(batched(lambda b: reconstruction_error(model.reconstruct(b), b, "mse"), x, bs).mean())
            out.update(val_d_real=float(real.mean()), val_d_fake=float(fake.mean()))
        return out

    # ------------------------------------------------------------------------ evaluation
    def evaluate(self, run: TrainedRun, tta: bool = False) -> dict:
        cfg, info, model = run.config, run.info, run.model
        kind = model_type(model)
        g = cfg.generative
        normal = info.extra.get("normal_class")
        test = load_split(cfg.data.name, "test", cfg.data.root, cfg.data.download)
        in_class = test if normal is None else keep_classes(test, [normal])
        x = run.norm.from_uint8(in_class.images, run.device)
        bs = cfg.train.eval_batch_size
        report: dict = {"task": self.name, "run_dir": run.run_dir, "dataset": cfg.data.name, "model": cfg.model.name,
                        "kind": kind, "latent_dim": model.latent_dim, "normal_class": normal,
                        "num_test_images": len(x), "plots": []}
        plots = run.path("plots")
        os.makedirs(plots, exist_ok=True)
        with inference(model):
            if kind != "gan":
                rec = batched(model.reconstruct, x, bs)
                report["recon_mse"] = float(reconstruction_error(rec, x.cpu(), "mse").mean())
                report["recon_l2"] = float(reconstruction_error(rec, x.cpu(), "l2").mean())
                report["plots"].append(_plot_reconstructions(x.cpu(), rec, os.path.join(plots, "reconstructions.png")))
            prior = self.latent_prior(run)
            gen = torch.Generator().manual_seed(cfg.seed)
            half = len(x) // 2
            n = min(g.eval_samples, half)
            samples = batched(model.decode, prior.sample(n, gen).to(run.device), bs)
        feats = FeatureExtractor.for_run(run)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed + 1))
        ref = feats(x[perm[:half]].cpu())
        other = feats(x[perm[half:half + n]].cpu())
        fake = feats(samples)
        report["fd"] = fid_from_features(ref[0], fake[0])
        report["fd_floor"] = fid_from_features(ref[0], other[0])
        report["fd_images"] = {"reference": half, "compared": n}
        report["fd_features"] = feats.source
        conf = classifier_confidence(fake[1].numpy())
        report["samples_confidence"] = conf["confidence"]
        report["samples_class_histogram"] = conf["histogram"]
        report["samples_class_entropy"] = max(0.0, conf["diversity"])
        report["latent_prior"] = PRIOR_NAMES[g.latent_prior] if kind == "ae" else "N(0, I)"
        if kind == "ae":           # the notes' claim, measured: how sampling depends on what is known of the codes
            report["fd_by_prior"] = {g.latent_prior: report["fd"]}
            for form in PRIOR_NAMES:
                if form != g.latent_prior:
                    with inference(model):
                        z = self.latent_prior(run, form).sample(n, torch.Generator().manual_seed(cfg.seed))
                        other_samples = batched(model.decode, z.to(run.device), bs)
                    report["fd_by_prior"][form] = fid_from_features(ref[0], feats(other_samples)[0])
        report["plots"].append(save_image_grid(samples[:GRID], os.path.join(plots, "samples.png")))
        report["plots"].append(plot_bars({c: k / n for c, k in zip(info.classes, conf["histogram"])},
                                         os.path.join(plots, "sample_classes.png"),
                                         f"class of {n} samples by the FD classifier", "fraction of samples"))
        report["plots"].append(self._interpolations(run, x, prior, os.path.join(plots, "interpolation.png")))
        if normal is not None:
            one_class = self._one_class(run, test, normal, plots)
            report["plots"] += one_class.pop("plots")
            report.update(one_class)
        report["summary"] = "\n".join(_summary(report, info))
        report["plots"] = [os.path.basename(p) for p in report["plots"]]
        atomic_write_text(run.path("eval.json"), json.dumps(report, indent=1))
        return report

    def latent_prior(self, run: TrainedRun, form: str | None = None) -> Gaussian:
        """What sampling draws codes from: ``N(0, I)`` for the VAE and the GANs; for an AE,
        ``generative.latent_prior`` (or ``form``): the Gaussian fitted to the codes of its
        training images (``full``, cached in ``RUN/latent_prior.pt``), the same with its
        correlations dropped (``diagonal``), or ``N(0, I)`` (``standard``: nothing known of the
        codes, the notes' naive draw)."""
        model = run.model
        form = form or run.config.generative.latent_prior
        if model_type(model) != "ae" or form == "standard":
            return Gaussian.standard(model.latent_dim)
        path = run.path("latent_prior.pt")
        if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(run.checkpoint):
            d = torch.load(path, weights_only=True)
            full = Gaussian(d["mean"], d["cov"])
        else:
            full = self._fit_prior(run, path)
        return full if form == "full" else Gaussian(full.mean, torch.diag(full.cov.diagonal()))

    def _fit_prior(self, run: TrainedRun, path: str) -> Gaussian:
        model = run.model
        cfg = run.config
        train = load_split(cfg.data.name, "train", cfg.data.root, cfg.data.download)
        if cfg.data.limit_train:                    # the images the run trained on, as build_data took them
            train = ArrayDataset(train.images[:cfg.data.limit_train], train.labels[:cfg.data.limit_train],
                                 train.classes, train.source)
        normal = run.info.extra.get("normal_class")
        if normal is not None:
            train = keep_classes(train, [normal])
        images = train.images
        with inference(model):
            z = batched(model.encode, run.norm.from_uint8(images, run.device), cfg.train.eval_batch_size)
        prior = Gaussian.fit(z)
        atomic_torch_save({"mean": prior.mean, "cov": prior.cov}, path)
        return prior

    def sample(self, run: TrainedRun, n: int, seed: int = 0) -> Tensor:
        """``n`` generated images ``(n, C, H, W)`` on ``[0, 1]`` (CPU)."""
        prior = self.latent_prior(run)
        with inference(run.model):
            z = prior.sample(n, torch.Generator().manual_seed(seed)).to(run.device)
            return batched(run.model.decode, z, run.config.train.eval_batch_size)

    def _interpolations(self, run: TrainedRun, x: Tensor, prior: Gaussian, path: str) -> str:
        """Rows of decoded codes on the segment between two codes: two test images' codes for the
        models with an encoder (their images at both ends), two prior draws for DCGAN."""
        model = run.model
        gen = torch.Generator().manual_seed(run.config.seed + 2)
        rows = []
        with inference(model):
            for _ in range(4):
                if hasattr(model, "encode"):
                    i, j = torch.randint(len(x), (2,), generator=gen).tolist()
                    z0, z1 = model.encode(x[[i, j]]).float().cpu()
                    ends = [x[i].cpu(), x[j].cpu()]
                else:
                    z0, z1 = prior.sample(2, gen)
                    ends = []
                imgs = model.decode(interpolate(z0, z1, 8).to(run.device)).float().cpu()
                row = ([ends[0]] if ends else []) + list(imgs) + ([ends[1]] if ends else [])
                rows.append([_rgb(im) for im in row])
        n = len(rows[0])
        titles = [[""] * n for _ in rows]
        cols = (["image"] if n == 10 else []) + [f"t={t:.2f}" for t in np.linspace(0, 1, 8)] + (["image"] if n == 10 else [])
        return plot_image_rows(rows, titles, path, cols)

    def _one_class(self, run: TrainedRun, test, normal: int, plots: str) -> dict:
        """AUROC of each anomaly score on the whole test set (anomaly: any class but
        ``normal``), per class of anomaly too, and the per-pixel error maps."""
        x = run.norm.from_uint8(test.images, run.device)
        labels = (test.labels != normal).astype(np.int64)
        scores = anomaly_scores(run.model, x, run.config.train.eval_batch_size)
        auroc = {k: roc_auc(v.numpy(), labels) for k, v in scores.items()}
        per_class = {}
        for c in range(len(test.classes)):
            if c == normal:
                continue
            keep = (test.labels == normal) | (test.labels == c)
            per_class[test.classes[c]] = {k: roc_auc(v.numpy()[keep], labels[keep]) for k, v in scores.items()}
        out = {"auroc": auroc, "auroc_by_anomaly_class": per_class,
               "best_score": max(auroc, key=auroc.get), "plots": []}
        if hasattr(run.model, "reconstruct"):
            out["plots"] = [_plot_anomaly_maps(run, x, test.labels, normal, scores["reconstruction"],
                                               os.path.join(plots, "anomaly_maps.png"))]
        return out

    # ------------------------------------------------------------------------ predict / report
    def predict(self, run: TrainedRun, paths: list[str], topk: int = 1) -> list[dict]:
        """Per image, every anomaly score the model has (higher: less like the training images):
        the reconstruction error, and BiGAN's latent and discriminator scores."""
        x = images_to_input(run.info, paths, run.device)
        scores = anomaly_scores(run.model, x, run.config.train.eval_batch_size)
        out = []
        for i, p in enumerate(paths):
            parts = [f"{k} {float(v[i]):.4f}" for k, v in scores.items()]
            out.append({"path": p, "scores": {k: float(v[i]) for k, v in scores.items()},
                        "line": "  ".join(parts)})
        return out

    def headline(self, ev: dict) -> list[tuple[str, str]]:
        out = [("model", f"{ev['model']} ({ev['kind']}, latent {ev['latent_dim']})"),
               ("FD (floor)", f"{ev['fd']:.2f} ({ev['fd_floor']:.2f})")]
        if "recon_mse" in ev:
            out.append(("reconstruction MSE", f"{ev['recon_mse']:.4f}"))
        if "auroc" in ev:
            out.append((f"AUROC ({ev['best_score']})", f"{ev['auroc'][ev['best_score']]:.3f}"))
        out.append(("sample confidence", f"{ev['samples_confidence']:.3f}"))
        return out

    def report_sections(self, run: TrainedRun, ev: dict) -> list[Section]:
        plots = run.path("plots")
        sections = []
        grids = sorted(f for f in os.listdir(run.path("samples"))) if os.path.isdir(run.path("samples")) else []
        if grids:
            shown = sorted({grids[0], grids[len(grids) // 2], grids[-1]})
            sections.append(Section("training-samples", "Samples from fixed noise during training",
                                    H.row(H.img(os.path.join(run.path("samples"), f), f) for f in shown)))
        rows = [["FD to the test images", f"{ev['fd']:.3f}"], ["FD floor (two halves of the test set)", f"{ev['fd_floor']:.3f}"],
                ["images per side", f"{ev['fd_images']['reference']} vs {ev['fd_images']['compared']}"],
                ["features", ev["fd_features"]], ["latent prior", ev["latent_prior"]],
                ["classifier confidence on samples", f"{ev['samples_confidence']:.3f}"],
                ["class entropy of samples (1 = uniform)", f"{ev['samples_class_entropy']:.3f}"]]
        sections.append(Section("samples", "Generated images",
                                H.table(["measure", "value"], rows)
                                + H.row([H.img(os.path.join(plots, "samples.png"), "samples"),
                                         H.img(os.path.join(plots, "sample_classes.png"), "classes of samples")])))
        if "recon_mse" in ev:
            sections.append(Section("reconstructions", "Reconstructions (test images, then their reconstruction)",
                                    H.note(f"MSE per pixel {ev['recon_mse']:.4f}, L2 per image {ev['recon_l2']:.3f}")
                                    + H.img(os.path.join(plots, "reconstructions.png"), "reconstructions")))
        sections.append(Section("interpolation", "Interpolation in the latent space",
                                H.img(os.path.join(plots, "interpolation.png"), "interpolation")))
        if "auroc" in ev:
            names = list(ev["auroc"])
            table = H.table(["anomaly class", *names],
                            [["all", *[f"{ev['auroc'][k]:.3f}" for k in names]]]
                            + [[c, *[f"{v[k]:.3f}" for k in names]] for c, v in ev["auroc_by_anomaly_class"].items()])
            maps = H.img(os.path.join(plots, "anomaly_maps.png"), "anomaly maps") if "anomaly_maps.png" in ev["plots"] else ""
            sections.append(Section("anomaly", f"One-class anomaly detection (normal: {run.classes[ev['normal_class']]})",
                                    table + maps))
        return sections


# --------------------------------------------------------------------------------------- scores
def anomaly_scores(model: nn.Module, x: Tensor, batch_size: int = 512) -> dict[str, Tensor]:
    """Anomaly scores of images on ``[0, 1]`` (higher = more anomalous), each ``(N,)`` on the CPU:
    ``reconstruction`` (MSE per pixel of the model's reconstruction), for BiGAN also ``latent``
    (``-log N(E(s); 0, I)``) and ``discriminator`` (``1 - D(s, E(s))``), for DCGAN
    ``discriminator`` (``1 - D(s)``), for the VAE also ``elbo`` (the negative ELBO at the
    posterior mean)."""
    kind = model_type(model)
    out: dict[str, Tensor] = {}
    with inference(model):
        if hasattr(model, "reconstruct"):
            out["reconstruction"] = batched(lambda b: reconstruction_error(model.reconstruct(b), b, "mse"), x, batch_size)
        if kind == "bigan":
            std = Gaussian.standard(model.latent_dim)
            out["latent"] = -std.log_prob(batched(model.encode, x, batch_size))
            out["discriminator"] = batched(lambda b: 1 - torch.sigmoid(model.discriminator(b, model.encode(b))), x, batch_size)
        elif kind == "gan":
            out["discriminator"] = batched(lambda b: 1 - torch.sigmoid(model.discriminator(b)), x, batch_size)
        elif kind == "vae":
            def neg_elbo(b: Tensor) -> Tensor:
                o = model(b)
                nll = torch.nn.functional.binary_cross_entropy_with_logits(o.logits, b, reduction="none").flatten(1).sum(1)
                return nll + kl_standard_normal(o.mu, o.logvar)
            out["elbo"] = batched(neg_elbo, x, batch_size)
    return out


# --------------------------------------------------------------------------------------- FD features
class FeatureExtractor:
    """The penultimate features and class probabilities of a classification run, for the
    Fréchet distance: ``generative.feature_run``, else vislab's own classifier of the data set,
    trained once with the default recipe (shortened) into the cache folder."""

    def __init__(self, run: TrainedRun, source: str) -> None:
        self.run, self.source = run, source

    @classmethod
    def for_run(cls, gen_run: TrainedRun, log: Callable[[str], None] = print) -> FeatureExtractor:
        cfg, info = gen_run.config, gen_run.info
        path = cfg.generative.feature_run or default_feature_run(cfg.data.name, cfg.data.root, log)
        if not os.path.isdir(path):
            raise UserError(f"generative.feature_run: {path} is not a run directory; give a classification run "
                            f"of {cfg.data.name}, or unset it to use vislab's own")
        run = load_run(path, gen_run.device)
        if run.task.name != "classification":
            raise UserError(f"generative.feature_run: {path} is a {run.task.name} run; the FD needs a classification run")
        if (run.info.dataset, run.info.in_chans, run.info.image_size) != (info.dataset, info.in_chans, info.image_size):
            raise UserError(f"generative.feature_run: {path} classifies {run.info.dataset} "
                            f"{run.info.in_chans}x{run.info.image_size}; this run generates {info.dataset} "
                            f"{info.in_chans}x{info.image_size}: use a classifier of the same images")
        return cls(run, f"{run.config.model.name} trained by vislab ({os.path.abspath(path)})")

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``(N, C, H, W)`` on ``[0, 1]`` -> features ``(N, D)`` and probabilities ``(N, K)``."""
        model, norm = self.run.model, self.run.norm
        feats, probs = [], []
        with inference(model):
            for i in range(0, len(images), 1000):
                f = model.forward_head(model.forward_features(norm.normalize(images[i:i + 1000].to(self.run.device))),
                                       pre_logits=True)
                feats.append(f.flatten(1).double().cpu())
                probs.append(torch.softmax(model.forward_head(f).float(), 1).cpu())
        return torch.cat(feats), torch.cat(probs)


def cache_dir() -> str:
    return os.environ.get("VISLAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vislab")


def default_feature_run(dataset: str, root: str | None, log: Callable[[str], None] = print) -> str:
    """vislab's own FD classifier of ``dataset``: trained once (the default recipe, 4 epochs)
    into ``$VISLAB_CACHE/fd-features/DATASET`` and reused."""
    path = os.path.join(cache_dir(), "fd-features", dataset)
    if not os.path.exists(os.path.join(path, "checkpoints", "best.pt")):
        from vislab.tasks.runner import (
            train,  # the runner imports every task: import it when needed
        )
        log(f"FD features: training vislab's {dataset} classifier once (default recipe, 4 epochs) into {path}")
        cfg = load_config(None, [*FEATURE_RECIPE, f"data.name={dataset}"] + ([f"data.root={root}"] if root else []))
        train(cfg, path, fresh=True, progress=False, log=log)
    return path


# --------------------------------------------------------------------------------------- hooks, plots
class SampleGridHook(Hook):
    """After every epoch, the grid of the same ``GRID`` noise vectors through the generator (or
    the VAE's decoder) into ``DIR/epoch_NNN.png``: how the samples evolve over training."""

    def __init__(self, out_dir: str, seed: int) -> None:
        self.out_dir, self.seed = out_dir, seed

    def after_epoch(self, t) -> None:
        model = t.eval_model()
        if model_type(model) == "ae":
            return
        z = torch.randn(GRID, model.latent_dim, generator=torch.Generator().manual_seed(self.seed))
        with inference(model):
            imgs = model.decode(z.to(t.device)).float().cpu()
        save_image_grid(imgs, os.path.join(self.out_dir, f"epoch_{t.epoch + 1:03d}.png"))


def _rgb(img: Tensor) -> np.ndarray:
    a = (img.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return np.repeat(a[0][..., None], 3, 2) if a.shape[0] == 1 else a.transpose(1, 2, 0)


def _plot_reconstructions(x: Tensor, rec: Tensor, path: str, n: int = 10) -> str:
    idx = torch.linspace(0, len(x) - 1, n).long()
    rows = [[_rgb(x[i]) for i in idx], [_rgb(rec[i]) for i in idx]]
    return plot_image_rows(rows, [["test"] * n, ["reconstruction"] * n], path)


def _plot_anomaly_maps(run: TrainedRun, x: Tensor, labels: np.ndarray, normal: int, score: Tensor, path: str,
                       n: int = 4) -> str:
    """The per-pixel squared reconstruction error (the notes' anomaly mask before a threshold)
    of the lowest-scored normal and the highest-scored anomalous test images: one row each,
    image | reconstruction | error over the image."""
    order = torch.argsort(score).tolist()
    idx = [i for i in order if labels[i] == normal][:n] + [i for i in reversed(order) if labels[i] != normal][:n]
    with inference(run.model):
        rec = run.model.reconstruct(x[idx]).float().cpu()
    img = x[idx].cpu()
    err = (img - rec).pow(2).mean(1)
    heat = (err / err.max().clamp_min(1e-12)).numpy()
    rows = [[_rgb(img[k]), _rgb(rec[k]), (heatmap_overlay(img[k].numpy(), heat[k]) * 255).round().astype(np.uint8)]
            for k in range(len(idx))]
    titles = [[f"{run.classes[int(labels[i])]}", f"score {float(score[i]):.4f}", "squared error"] for i in idx]
    return plot_image_rows(rows, titles, path, ["test image", "reconstruction", "error map"])


def _summary(ev: dict, info: DataInfo) -> list[str]:
    lines = [f"{ev['model']} ({ev['kind']}), latent {ev['latent_dim']}"]
    if "recon_mse" in ev:
        lines.append(f"reconstruction: MSE {ev['recon_mse']:.4f} per pixel, L2 {ev['recon_l2']:.3f} per image")
    lines.append(f"FD {ev['fd']:.2f} (floor, two halves of the test set: {ev['fd_floor']:.2f}); "
                 f"classifier confidence on samples {ev['samples_confidence']:.3f}, class entropy "
                 f"{ev['samples_class_entropy']:.3f}")
    if "auroc" in ev:
        lines.append(f"one-class ({info.classes[ev['normal_class']]} normal) AUROC: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in ev["auroc"].items()))
    return lines


register_task(GenerativeTask())

__all__ = ["FeatureExtractor", "GenerativeTask", "SampleGridHook", "anomaly_scores", "default_feature_run"]
