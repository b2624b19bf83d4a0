"""The metric-learning task: an embedding trained with a contrastive or triplet loss on pairs or
triplets mined in class-balanced batches, evaluated as retrieval among classes it never saw.

The open-set protocol of metric-learning benchmarks: the network trains on ``metric.train_classes``
(Fashion-MNIST classes 0-4 by default) and is tested on the other classes (5-9), where a
classifier's head would be useless and only distances between embeddings can recognise anything.
``metric.train_classes: null`` is the closed set: every class in training and in test.

Evaluation (``eval.json``), on the test images of the evaluated classes:
- retrieval, each test image a query against all the others: precision@1, R-precision, MAP@R
  and recall@K (:func:`vislab.metrics.retrieval.retrieval_scores`);
- kNN accuracy: each test image classified by its ``KNN_K`` nearest *training* images of the
  evaluated classes (images the network never trained on in the open set);
- verification: balanced same / different pairs of test images, ROC AUC of the distance and the
  accuracy of the best threshold (the siamese use of the notes: is this the same identity?).

The cross-entropy baseline (``metric.loss: cross_entropy``) is the same network with a classifier
on the embedding; it is evaluated on its embedding (the penultimate layer) exactly as the others.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.config import Config
from vislab.data.datasets import ArrayDataset, checksum_warning, load_split
from vislab.data.formats import load_image
from vislab.data.info import DataInfo, Normalization
from vislab.data.loader import channel_stats
from vislab.data.sampler import BalancedBatchLoader
from vislab.data.subsets import keep_classes
from vislab.errors import UserError
from vislab.explain.latent import tsne_2d
from vislab.io import IMAGE_EXTENSIONS, atomic_write_text
from vislab.metric.losses import contrastive_loss, triplet_loss
from vislab.metric.miners import mine, random_pairs
from vislab.metrics.retrieval import knn_classify, retrieval_scores, verification_scores
from vislab.models.embedding import EmbeddingNet, SiameseNetwork
from vislab.report import html as H
from vislab.report.plots import plot_image_grid, plot_scatter, pyplot, save_figure
from vislab.tasks.base import DataBundle, Section, register_task
from vislab.tasks.classification import (
    build_classifier,
    images_to_input,
    split_train_val,
)
from vislab.tasks.trained import TrainedRun

KNN_K = 5
RECALL_KS = (1, 2, 4, 8)
VERIFICATION_PAIRS = 10_000


def class_split(cfg: Config, num_classes: int) -> tuple[list[int], list[int]]:
    """The classes trained on and the classes evaluated: ``metric.train_classes`` and the rest
    (open set), or all of them twice (closed set, ``train_classes: null``)."""
    train = cfg.metric.train_classes
    if train is None:
        return list(range(num_classes)), list(range(num_classes))
    bad = [c for c in train if not 0 <= c < num_classes]
    if bad or len(set(train)) != len(train) or not train:
        raise UserError(f"metric.train_classes={train} must be distinct class indices in 0..{num_classes - 1}")
    rest = [c for c in range(num_classes) if c not in train]
    if not rest:
        raise UserError("metric.train_classes names every class, so no class is left unseen for the test; "
                        "drop some, or set metric.train_classes=null for the closed-set protocol")
    return list(train), rest


@torch.no_grad()
def embed_images(model: nn.Module, x: Tensor, batch_size: int = 1024, tta: bool = False) -> Tensor:
    """Embeddings ``(N, D)`` (float32, CPU) of normalised images in eval mode; with ``tta`` the
    mean of the image's and its mirror's, renormalised when the model normalises."""
    was = model.training
    model.eval()
    try:
        out = []
        for i in range(0, len(x), batch_size):
            e = model(x[i:i + batch_size])
            if tta:
                e = (e + model(x[i:i + batch_size].flip(3))) / 2
                if getattr(model, "normalize", False):
                    e = F.normalize(e, dim=1)
            out.append(e.float().cpu())
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.empty(0)


def _eval_classes(info: DataInfo) -> list[int]:
    return list(info.extra["eval_classes"])


class MetricTask:
    name = "metric"
    augment = True
    monitor = "val_map_at_r"

    def build_data(self, cfg: Config, device: torch.device, val_indices: np.ndarray | None = None) -> DataBundle:
        """Training images of the training classes, split into train and validation (validation
        retrieval among the training classes: the unseen classes are only read by ``evaluate``)."""
        if cfg.data.classes is not None or cfg.data.per_class is not None:
            raise UserError("the metric task picks its classes with metric.train_classes; drop data.classes "
                            "and data.per_class")
        warning = checksum_warning(cfg.data.name, cfg.data.root)
        full = load_split(cfg.data.name, "train", cfg.data.root, cfg.data.download)
        train_classes, eval_classes = class_split(cfg, len(full.classes))
        part = keep_classes(full, train_classes)
        x, y = part.images, part.labels
        if cfg.data.limit_train is not None:
            x, y = x[:cfg.data.limit_train], y[:cfg.data.limit_train]
        tr, va = split_train_val(len(y), cfg, val_indices)
        mean, std = channel_stats(x[tr])
        norm = Normalization(tuple(mean), tuple(max(s, 1e-6) for s in std))
        info = DataInfo(cfg.data.name, tuple(part.classes), int(x.shape[1]), (int(x.shape[2]), int(x.shape[3])), norm,
                        {"train_classes": train_classes, "eval_classes": eval_classes,
                         "dataset_classes": list(full.classes)})
        cl = cfg.train.channels_last
        notes = [f"warning: {warning}"] if warning else []
        seen = ", ".join(full.classes[c] for c in train_classes)
        notes.append(f"metric learning on {seen}; tested on "
                     + ("the same classes (closed set)" if cfg.metric.train_classes is None
                        else ", ".join(full.classes[c] for c in eval_classes) + " (never seen in training)"))
        return DataBundle(norm.from_uint8(x[tr], device, cl), torch.from_numpy(y[tr]).to(device),
                          norm.from_uint8(x[va], device, cl), torch.from_numpy(y[va]).to(device), info, notes)

    def train_loader(self, cfg: Config, data: DataBundle, gen: torch.Generator) -> BalancedBatchLoader:
        """P x K batches (``metric.classes_per_batch`` classes, ``metric.images_per_class`` each):
        every anchor has positives to mine; the cross-entropy baseline uses the same batches."""
        m = cfg.metric
        if m.classes_per_batch > data.info.num_classes:
            raise UserError(f"metric.classes_per_batch={m.classes_per_batch} but training has only "
                            f"{data.info.num_classes} classes; set --set metric.classes_per_batch={data.info.num_classes}")
        return BalancedBatchLoader(data.train_x, data.train_y, m.classes_per_batch, m.images_per_class,
                                   gen=gen, augment=cfg.data.augment if self.augment else None,
                                   fill=data.info.norm.black)

    def build_model(self, cfg: Config, info: DataInfo) -> EmbeddingNet:
        """The registry backbone ``model.name`` (sized for the data), its head replaced by a
        ``metric.embed_dim`` projection; a classifier on top for the cross-entropy baseline."""
        backbone = build_classifier(cfg, info)
        m = cfg.metric
        return EmbeddingNet(backbone, m.embed_dim, m.normalize,
                            info.num_classes if m.loss == "cross_entropy" else 0)

    def loss(self, cfg: Config, model: nn.Module):
        """Triplet loss over the triplets ``metric.miner`` finds in the batch; contrastive loss over
        random balanced pairs (``miner: random``) or every pair (``batch_all``); or the baseline's
        cross-entropy.
        Random miners draw from torch's global generator, whose state checkpoints keep."""
        m = cfg.metric
        if m.loss == "cross_entropy":
            smoothing = cfg.train.label_smoothing
            return lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing)
        if m.loss == "contrastive":
            form = "squared" if m.squared else "plain"

            def contrastive(emb: Tensor, y: Tensor) -> Tensor:
                pairs = random_pairs(y, len(y)) if m.miner == "random" else None
                return contrastive_loss(emb, y, pairs, margin=m.margin, form=form)
            return contrastive

        def triplet(emb: Tensor, y: Tensor) -> Tensor:
            triplets = mine(m.miner, emb, y, margin=m.margin, squared=m.squared)
            return triplet_loss(emb, y, triplets, margin=m.margin, squared=m.squared)
        return triplet

    def correct(self, out, y: Tensor) -> None:
        """No running training accuracy: an embedding has none (validation measures retrieval)."""
        return

    def validate(self, model: nn.Module, loader, amp_dtype=None) -> dict[str, float]:
        """Retrieval among the validation images (each a query against the others)."""
        e = embed_images(model, loader.images, loader.batch_size)
        y = loader.labels.cpu()
        s = retrieval_scores(e, y, e, y, reference_includes_query=True, ks=(1,))
        return {"val_precision_at_1": s["precision_at_1"], "val_r_precision": s["r_precision"],
                "val_map_at_r": s["map_at_r"]}

    def evaluate(self, run: TrainedRun, tta: bool = False) -> dict:
        """Retrieval, kNN and verification on the evaluated classes' test images (see the
        module notes); writes ``eval.json``, ``plots/retrieval.png``, ``plots/tsne.png`` and
        ``plots/verification_roc.png``."""
        cfg, info = run.config, run.info
        eval_classes = _eval_classes(info)
        names = [info.extra["dataset_classes"][c] for c in eval_classes]
        test = keep_classes(load_split(cfg.data.name, "test", cfg.data.root, cfg.data.download), eval_classes)
        yt = torch.from_numpy(test.labels)
        et = embed_images(run.model, run.norm.from_uint8(test.images, run.device), cfg.train.eval_batch_size, tta)
        ref, er = reference_gallery(run, tta)
        scores, ver = open_set_scores(et, yt, er, torch.from_numpy(ref.labels), cfg.seed)
        report = {
            "task": self.name, "run_dir": run.run_dir, "dataset": cfg.data.name, "model": cfg.model.name,
            "loss": cfg.metric.loss, "miner": cfg.metric.miner if cfg.metric.loss != "cross_entropy" else None,
            "protocol": "closed set" if cfg.metric.train_classes is None else "open set",
            "train_classes": [info.extra["dataset_classes"][c] for c in info.extra["train_classes"]],
            "eval_classes": names, "num_queries": len(yt), "tta": tta,
            **scores, "plots": ["retrieval.png", "tsne.png", "verification_roc.png"],
        }
        report["summary"] = _summary(report)
        atomic_write_text(run.path("eval.json"), json.dumps(report, indent=1))
        _plot_retrieval(test, et, yt, names, run.path("plots", "retrieval.png"))
        sample = torch.from_numpy(np.random.default_rng(0).permutation(len(yt))[:1000])
        plot_scatter(tsne_2d(et[sample]).numpy(), yt[sample].numpy(), names, run.path("plots", "tsne.png"),
                     f"t-SNE of {len(sample)} test embeddings ({report['protocol']})")
        _plot_roc(ver, run.path("plots", "verification_roc.png"))
        return report

    def predict(self, run: TrainedRun, paths: list[str], topk: int = 1) -> list[dict]:
        """The class of each image by a vote of its ``KNN_K`` nearest training images of the
        evaluated classes, with the distance to the nearest."""
        ref, er = reference_gallery(run)
        e = embed_images(run.model, images_to_input(run.info, paths, run.device))
        pred = knn_classify(er, torch.from_numpy(ref.labels), e, k=KNN_K)
        d = torch.cdist(e, er).min(1).values
        return [{"path": p, "class": ref.classes[int(c)], "distance": float(dist),
                 "line": f"{ref.classes[int(c)]} (vote of the {KNN_K} nearest of {len(ref.labels)} "
                         f"training images; nearest at distance {float(dist):.3f})"}
                for p, c, dist in zip(paths, pred, d)]

    def headline(self, ev: dict) -> list[tuple[str, str]]:
        return [("precision@1", f"{ev['precision_at_1']:.3f}"), ("MAP@R", f"{ev['map_at_r']:.3f}"),
                ("R-precision", f"{ev['r_precision']:.3f}"), (f"kNN accuracy (k={ev['knn_k']})", f"{ev['knn_accuracy']:.3f}"),
                ("verification AUC", f"{ev['verification_auc']:.3f}"), ("protocol", ev["protocol"])]

    def report_sections(self, run: TrainedRun, ev: dict) -> list[Section]:
        rows = [[k, f"{ev[k]:.4f}"] for k in ("precision_at_1", "r_precision", "map_at_r",
                                              *(f"recall_at_{k}" for k in RECALL_KS), "knn_accuracy",
                                              "verification_auc", "verification_accuracy")]
        return [
            Section("metrics", "Retrieval on " + ", ".join(ev["eval_classes"]),
                    H.lines([(f"{ev['protocol']}: trained on {', '.join(ev['train_classes'])}; "
                             f"{ev['num_queries']} test queries, each against all the others")])
                    + H.table(["metric", "value"], rows)),
            Section("retrieval", "Queries and their nearest test images",
                    H.img(run.path("plots", "retrieval.png"), "retrieval")),
            Section("tsne", "t-SNE map of the test embeddings", H.img(run.path("plots", "tsne.png"), "t-SNE")),
            Section("verification", "Verification: same or different?",
                    H.lines([(f"best threshold {ev['verification_threshold']:.3f}: accuracy "
                             f"{ev['verification_accuracy']:.3f} on {ev['verification_pairs']} balanced pairs")])
                    + H.img(run.path("plots", "verification_roc.png"), "verification ROC")),
        ]


def open_set_scores(test: Tensor, test_labels: Tensor, reference: Tensor, reference_labels: Tensor,
                    seed: int = 0) -> tuple[dict, dict]:
    """Every figure of the evaluation, for any embeddings (a run's, or raw pixels for the
    baseline): retrieval among the test embeddings (each a query against the others), kNN
    accuracy against the labelled ``reference`` embeddings, and verification on balanced test
    pairs.  Returns the scores and the verification ROC (for its plot)."""
    scores = retrieval_scores(test, test_labels, test, test_labels, reference_includes_query=True, ks=RECALL_KS)
    ver = verification_scores(test, test_labels, n_pairs=VERIFICATION_PAIRS, seed=seed)
    knn = float((knn_classify(reference, reference_labels, test, k=KNN_K) == test_labels).float().mean())
    return {**scores, "knn_k": KNN_K, "knn_accuracy": knn, "knn_reference": len(reference_labels),
            "verification_auc": ver["auc"], "verification_accuracy": ver["best_accuracy"],
            "verification_threshold": ver["best_threshold"], "verification_pairs": VERIFICATION_PAIRS}, ver


def reference_gallery(run: TrainedRun, tta: bool = False) -> tuple[ArrayDataset, Tensor]:
    """The training images of the evaluated classes and their embeddings: the labelled gallery
    that kNN and ``predict`` vote in."""
    cfg = run.config
    ref = keep_classes(load_split(cfg.data.name, "train", cfg.data.root, cfg.data.download), _eval_classes(run.info))
    return ref, embed_images(run.model, run.norm.from_uint8(ref.images, run.device), cfg.train.eval_batch_size, tta)


def retrieve(run: TrainedRun, query_paths: list[str], gallery: str = "test", k: int = 8,
             out: str | None = None) -> dict:
    """The ``k`` nearest gallery images of each query image file.  ``gallery``: ``test`` or
    ``train`` (that split's images of the evaluated classes) or a folder of image files.  Writes
    a figure (query, then its neighbours with their distances) to ``out`` (default
    ``RUN/retrieval_query.png``) and returns the neighbours."""
    cfg = run.config
    if gallery in ("test", "train"):
        data = keep_classes(load_split(cfg.data.name, gallery, cfg.data.root, cfg.data.download), _eval_classes(run.info))
        images, names = data.images, [f"{gallery}:{i} {data.classes[c]}" for i, c in enumerate(data.labels)]
    elif os.path.isdir(gallery):
        files = sorted(f for f in os.listdir(gallery) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise UserError(f"gallery folder {gallery} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        images = np.stack([load_image(os.path.join(gallery, f), run.info.in_chans, run.info.image_size) for f in files])
        names = files
    else:
        raise UserError(f"gallery {gallery!r} is neither 'test', 'train' nor a folder of images; check the path")
    if not 1 <= k <= len(images):
        raise UserError(f"--k {k} neighbours asked from a gallery of {len(images)} images; choose 1..{len(images)}")
    eg = embed_images(run.model, run.norm.from_uint8(images, run.device), cfg.train.eval_batch_size)
    queries = np.stack([load_image(p, run.info.in_chans, run.info.image_size) for p in query_paths])
    eq = embed_images(run.model, run.norm.from_uint8(queries, run.device))
    dist, idx = torch.cdist(eq, eg).topk(k, dim=1, largest=False)
    results = [{"path": p, "neighbours": [{"name": names[int(j)], "index": int(j), "distance": float(d)}
                                          for j, d in zip(idx[n], dist[n])]}
               for n, p in enumerate(query_paths)]
    shown, titles = [], []
    for n, p in enumerate(query_paths):
        shown += [queries[n], *images[idx[n].numpy()]]
        titles += [f"query {os.path.basename(p)}"[:24], *(f"{names[int(j)]}"[:20] + f"\nd={float(d):.2f}"
                                                      for j, d in zip(idx[n], dist[n]))]
    out = out or run.path("retrieval_query.png")
    plot_image_grid(np.stack(shown), titles, out, cols=k + 1)
    return {"figure": out, "gallery": gallery, "gallery_size": len(images), "results": results}


def verify(run: TrainedRun, path1: str, path2: str) -> dict:
    """Are two image files the same class?  The siamese network's distance between them against
    the best threshold of the run's evaluation (``eval.json``)."""
    ev_path = run.path("eval.json")
    if not os.path.exists(ev_path):
        raise UserError(f"{run.run_dir} has no eval.json, so no verification threshold; run `vislab evaluate {run.run_dir}` first")
    with open(ev_path) as f:
        threshold = float(json.load(f)["verification_threshold"])
    with torch.no_grad():
        x1, x2 = images_to_input(run.info, [path1, path2], run.device).split(1)
        d = float(SiameseNetwork(run.model).distance(x1, x2)[0])
    return {"distance": d, "threshold": threshold, "same": d <= threshold}


def _summary(rep: dict) -> str:
    recall = "   ".join(f"R@{k} {rep[f'recall_at_{k}']:.3f}" for k in RECALL_KS)
    return "\n".join([
        f"{rep['model']} embedding ({rep['loss']}{', ' + rep['miner'] if rep['miner'] else ''}) on {rep['dataset']}, "
        f"{rep['protocol']}: {rep['num_queries']} test queries of {', '.join(rep['eval_classes'])}"
        + (", flip TTA" if rep["tta"] else ""),
        f"  precision@1 {rep['precision_at_1']:.4f}   R-precision {rep['r_precision']:.4f}   MAP@R {rep['map_at_r']:.4f}",
        f"  {recall}",
        f"  kNN accuracy (k={rep['knn_k']}, {rep['knn_reference']} training images) {rep['knn_accuracy']:.4f}",
        (f"  verification ({rep['verification_pairs']} pairs): AUC {rep['verification_auc']:.4f}, "
        f"accuracy {rep['verification_accuracy']:.4f} at distance <= {rep['verification_threshold']:.3f}"),
        f"MAP@R: {rep['map_at_r']:.4f}"])


def _plot_retrieval(test: ArrayDataset, emb: Tensor, labels: Tensor, names: list[str], path: str,
                    k: int = 8) -> str:
    """The first test image of each evaluated class and its ``k`` nearest other test images;
    a neighbour's title says whether its class is the query's."""
    queries = [int(np.flatnonzero(test.labels == c)[0]) for c in range(len(names))]
    d = torch.cdist(emb[queries], emb)
    d[torch.arange(len(queries)), torch.tensor(queries)] = float("inf")
    dist, idx = d.topk(k, dim=1, largest=False)
    shown, titles = [], []
    for q, row, drow in zip(queries, idx, dist):
        shown += [test.images[q], *test.images[row.numpy()]]
        titles += [f"query: {names[int(labels[q])]}"[:22],
                   *(("ok " if labels[j] == labels[q] else "x ") + f"{names[int(labels[j])]}"[:14] + f"\n{float(dd):.2f}"
                     for j, dd in zip(row, drow))]
    return plot_image_grid(np.stack(shown), titles, path, cols=k + 1)


def _plot_roc(ver: dict, path: str) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(ver["fpr"], ver["tpr"], label=f"AUC {ver['auc']:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate (different pairs called same)")
    ax.set_ylabel("true positive rate")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


TASK = register_task(MetricTask())

__all__ = [
    "TASK",
    "MetricTask",
    "class_split",
    "embed_images",
    "open_set_scores",
    "reference_gallery",
    "retrieve",
    "verify",
]
