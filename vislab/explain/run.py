"""Every explanation method on a trained run: load the run's model, pick its images, compute,
and write a PNG (and JSON where there are figures) into ``RUN_DIR/explain/``.  ``vislab
explain`` and the HTML report both call :func:`explain`.

Images are named ``test:N`` or ``train:N`` (image ``N`` of that split of the run's data set;
``test:0-3`` for a range) or given as image files, converted like the training data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from vislab.data.datasets import load_split
from vislab.data.formats import load_image
from vislab.data.subsets import keep_classes
from vislab.errors import UserError
from vislab.explain.activation_max import maximize_activation
from vislab.explain.cam import class_maps, grad_cam, normalize, upsample
from vislab.explain.filters import dead_filters, filter_images, first_conv
from vislab.explain.hooks import class_targets, default_layer, inspecting, output_shapes
from vislab.explain.latent import (
    embed,
    nearest_neighbours,
    pca_2d,
    precision_at_k,
    tsne_2d,
)
from vislab.explain.localization import localize, place_on_canvas
from vislab.explain.patches import top_patches
from vislab.explain.saliency import input_gradient, saliency_map, smooth_grad
from vislab.io import atomic_write_text
from vislab.report.plots import plot_heatmaps, plot_image_grid, plot_scatter

if TYPE_CHECKING:
    from vislab.tasks.trained import TrainedRun


@dataclass
class Options:
    """The knobs of :func:`explain`; each method reads the ones it needs (None: its default)."""
    images: list[str] = field(default_factory=lambda: ["test:0-3"])
    target: str | None = None        # class name or index (default: the predicted class)
    layer: str | None = None
    unit: int | None = None
    k: int = 8                       # neighbours, patches, mistakes
    limit: int | None = None         # images of the data set a method runs over
    map: str = "cam"                 # localize: cam | gradcam | gradcam++ | augmented-gradcam
    canvas: int | None = None        # localize: canvas side (default twice the image side)
    threshold: float = 0.2           # localize: fraction of the map's maximum
    steps: int = 200                 # maximize: gradient-ascent steps
    seed: int = 0


@dataclass
class Result:
    method: str
    files: list[str]                 # what was written
    lines: list[str]                 # what to tell the user
    data: dict = field(default_factory=dict)


class RunContext:
    """A trained run (a :class:`vislab.tasks.TrainedRun`) seen by the explanation methods: its
    model, classes and normalisation, its data set's splits (read once), and where outputs go."""

    def __init__(self, run: TrainedRun) -> None:
        if run.task.name != "classification":
            raise UserError(f"{run.run_dir} is a {run.task.name} run; the explanation methods are for "
                            "classification runs")
        self.run = run
        self.run_dir, self.model, self.device, self.cfg = run.run_dir, run.model, run.device, run.config
        self.info, self.norm = run.info, run.info.norm
        self.classes: list[str] = list(run.info.classes)
        self.out_dir = os.path.join(run.run_dir, "explain")
        self._splits: dict = {}

    def path(self, name: str) -> str:
        os.makedirs(self.out_dir, exist_ok=True)
        return os.path.join(self.out_dir, name)

    def to_input(self, images: np.ndarray) -> Tensor:
        """uint8 ``(N, C, H, W)`` -> the model's normalised float input on its device."""
        return self.norm.from_uint8(images, self.device)

    def to_display(self, x: Tensor) -> np.ndarray:
        """Normalised input -> ``[0, 1]`` float ``(N, C, H, W)`` numpy."""
        return self.norm.denormalize(x.detach().float().cpu()).clamp(0, 1).numpy()

    def split(self, name: str):
        """``'train'`` or ``'test'`` of the run's data set (uint8, cached), restricted to the
        classes the run was trained on (``data.classes``) and labelled as in training."""
        if name not in self._splits:
            d = load_split(self.cfg.data.name, name, self.cfg.data.root)
            self._splits[name] = d if self.cfg.data.classes is None else keep_classes(d, self.cfg.data.classes)
        return self._splits[name]

    def sample(self, name: str, limit: int) -> tuple[Tensor, Tensor]:
        """The first ``limit`` images of a split as model input, and their labels."""
        d = self.split(name)
        return self.to_input(d.images[:limit]), torch.from_numpy(d.labels[:limit])

    def images(self, specs: list[str]) -> tuple[Tensor, list[int | None], list[str]]:
        """Model input, labels (None for files) and names of the images named by ``specs``."""
        arrays, labels, names = [], [], []
        for spec in specs:
            split, _, rest = spec.partition(":")
            if split in ("test", "train") and rest:
                d = self.split(split)
                for i in _index_range(rest, len(d.labels), spec):
                    arrays.append(d.images[i])
                    labels.append(int(d.labels[i]))
                    names.append(f"{split}:{i}")
            else:
                arrays.append(load_image(spec, self.info.in_chans, self.info.image_size))
                labels.append(None)
                names.append(os.path.basename(spec))
        if not arrays:
            raise UserError("no images given; use --image test:N, --image train:N or --image FILE")
        return self.to_input(np.stack(arrays)), labels, names

    def class_index(self, spec: str | None) -> int | None:
        """A class given by name or index -> its index (None stays None)."""
        if spec is None:
            return None
        if spec in self.classes:
            return self.classes.index(spec)
        if spec.lstrip("-").isdigit() and 0 <= int(spec) < len(self.classes):
            return int(spec)
        raise UserError(f"unknown class {spec!r}: give an index 0..{len(self.classes) - 1} or one "
                        f"of {', '.join(self.classes)}")

    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities ``(N, K)`` on the CPU."""
        with torch.no_grad(), inspecting(self.model):
            return torch.cat([torch.softmax(self.model(x[i:i + 512]).float(), 1).cpu()
                              for i in range(0, len(x), 512)])

    def write_json(self, name: str, data: dict) -> str:
        path = self.path(name)
        atomic_write_text(path, json.dumps(data, indent=1))
        return path


def _index_range(text: str, n: int, spec: str) -> range:
    a, _, b = text.partition("-")
    if not a.isdigit() or (b and not b.isdigit()):
        raise UserError(f"image {spec!r}: write test:N or test:N-M with image numbers")
    lo, hi = int(a), int(b or a)
    if not lo <= hi < n:
        raise UserError(f"image {spec!r}: the split has images 0..{n - 1}")
    return range(lo, hi + 1)


# ------------------------------------------------------------------------------ methods

METHODS: dict[str, Callable[[RunContext, Options], Result]] = {}   # (the CLI describes each)


def _method(name: str):
    def register(fn):
        METHODS[name] = fn
        return fn
    return register


def _describe(ctx: RunContext, names: list[str], labels: list[int | None], probs: Tensor,
              targets: Tensor) -> tuple[list[str], list[str]]:
    """Panel titles and report lines: true class, prediction, and the class mapped."""
    titles, lines = [], []
    for n, (name, y) in enumerate(zip(names, labels)):
        p, t = int(probs[n].argmax()), int(targets[n])
        true = ctx.classes[y] if y is not None else "?"
        titles.append(f"{name} {true}\npred {ctx.classes[p]} {probs[n, p]:.2f}, map {ctx.classes[t]}")
        lines.append(f"{name}: true {true}, predicted {ctx.classes[p]} ({probs[n, p]:.2f}); "
                     f"map of {ctx.classes[t]}")
    return titles, lines


def _map_method(name: str) -> Callable[[RunContext, Options], Result]:
    def run(ctx: RunContext, opts: Options) -> Result:
        x, labels, names = ctx.images(opts.images)
        probs = ctx.predict(x)
        targets = class_targets(probs, ctx.class_index(opts.target)).to(ctx.device)
        lines = []
        if name in ("saliency", "smoothgrad"):
            grad = (input_gradient(ctx.model, x, targets) if name == "saliency"
                    else smooth_grad(ctx.model, x, targets, seed=opts.seed))
            maps = saliency_map(grad)
        else:
            layer = opts.layer or default_layer(ctx.model, x)
            maps = class_maps(ctx.model, x, targets, name, layer)
            lines.append(f"layer {layer}")
        maps = normalize(upsample(maps, x.shape[-2:])).cpu().numpy()
        titles, desc = _describe(ctx, names, labels, probs, targets.cpu())
        path = plot_heatmaps(ctx.to_display(x), [maps], titles, [name], ctx.path(f"{name}.png"))
        return Result(name, [path], lines + desc)
    return run


for _name in ("cam", "gradcam", "gradcam++", "augmented-gradcam", "saliency", "smoothgrad"):
    _method(_name)(_map_method(_name))


@_method("mistakes")
def _mistakes(ctx: RunContext, opts: Options) -> Result:
    x, y = ctx.sample("test", opts.limit or len(ctx.split("test").labels))
    probs = ctx.predict(x)
    conf, pred = probs.max(1)
    wrong = (pred != y).nonzero()[:, 0]
    if len(wrong) == 0:
        return Result("mistakes", [], ["no mistakes on the test set"])
    worst = wrong[conf[wrong].argsort(descending=True)[:opts.k]]
    xs = x[worst.to(x.device)]
    cams = [normalize(upsample(grad_cam(ctx.model, xs, t.to(ctx.device), opts.layer), xs.shape[-2:]))
            .cpu().numpy() for t in (pred[worst], y[worst])]
    titles = [f"test:{int(i)} {ctx.classes[int(y[i])]}\nas {ctx.classes[int(pred[i])]} ({conf[i]:.2f})"
              for i in worst]
    path = plot_heatmaps(ctx.to_display(xs), cams, titles, ["Grad-CAM: predicted", "Grad-CAM: true"],
                         ctx.path("mistakes.png"))
    lines = [f"{len(wrong)} mistakes in {len(y)} test images; the {len(worst)} most confident:"]
    lines += [t.replace("\n", " ") for t in titles]
    return Result("mistakes", [path], lines, {"mistakes": len(wrong), "shown": worst.tolist()})


@_method("filters")
def _filters(ctx: RunContext, opts: Options) -> Result:
    if callable(getattr(ctx.model, "templates", None)):          # the linear classifier
        w = ctx.model.templates().float().cpu().numpy()
        path = plot_image_grid(w, ctx.classes, ctx.path("filters.png"), cols=min(10, len(w)))
        return Result("filters", [path], ["a linear classifier has no filters: its weights as one "
                                          "template image per class"], {"first_layer": "head", "layers": []})
    name, conv = first_conv(ctx.model)
    x, _ = ctx.sample("test", opts.limit or 1000)
    report = dead_filters(ctx.model, x)
    first = next((r for r in report if r.layer == name), None)
    dead = set(first.dead) if first else set()
    w = filter_images(conv).numpy()
    titles = [f"{i}{' dead' if i in dead else ''}" for i in range(len(w))]
    path = plot_image_grid(w, titles, ctx.path("filters.png"), cols=min(16, len(w)))
    lines = [f"first layer {name}: {len(w)} filters {tuple(conv.weight.shape[1:])}",
             f"dead filters over {len(x)} test images:"]
    lines += [f"  {r.layer:28s} {r.kind:10s} {len(r.dead):3d} of {r.channels:4d}"
              + (f"  {r.dead[:12]}{' ...' if len(r.dead) > 12 else ''}" if r.dead else "") for r in report]
    data = {"first_layer": name, "images": len(x), "layers": [r.to_dict() for r in report]}
    return Result("filters", [path, ctx.write_json("filters.json", data)], lines, data)


@_method("patches")
def _patches(ctx: RunContext, opts: Options) -> Result:
    layer = opts.layer or _middle_stage(ctx)
    unit = opts.unit or 0
    x, y = ctx.sample("test", opts.limit or 2000)
    top = top_patches(ctx.model, x, layer, unit, opts.k, fill=ctx.norm.black)
    titles = [f"test:{int(i)} {ctx.classes[int(y[i])]}\n{v:.2f}" for i, v in zip(top.indices, top.values)]
    shown = ctx.to_display(top.patches)
    path = plot_image_grid(shown, titles, ctx.path(f"patches-{layer}-{unit}.png"), cols=min(8, len(shown)))
    size = tuple(top.patches.shape[-2:])
    lines = [f"unit {unit} of {layer}: receptive field {size[0]}x{size[1]} pixels; top {len(titles)} "
             f"of {len(x)} test images: " + ", ".join(t.replace("\n", " ") for t in titles)]
    return Result("patches", [path], lines, {"indices": top.indices.tolist(), "values": top.values.tolist(),
                                             "boxes": top.boxes.tolist()})


def _middle_stage(ctx: RunContext) -> str:
    info = getattr(ctx.model, "feature_info", None)
    if not info:
        raise UserError("name the layer whose units to show with --layer (see `vislab summary`)")
    return info[len(info) // 2]["module"]


@_method("maximize")
def _maximize(ctx: RunContext, opts: Options) -> Result:
    shape = (ctx.info.in_chans, *ctx.info.image_size)
    lo = [-m / s for m, s in zip(ctx.norm.mean, ctx.norm.std)]
    hi = [(1 - m) / s for m, s in zip(ctx.norm.mean, ctx.norm.std)]
    if opts.layer is None:
        c = ctx.class_index(opts.target)
        units = [c] if c is not None else list(range(min(len(ctx.classes), 10)))
        names = [ctx.classes[u] for u in units]
    else:
        out = output_shapes(ctx.model, torch.zeros(1, *shape, device=ctx.device), [opts.layer]).get(opts.layer)
        if out is None:
            raise UserError(f"layer {opts.layer!r} is not run by the model's forward pass; choose another --layer")
        channels = out[1] if len(out) != 3 else out[2]         # maps (B, C, h, w), tokens (B, N, D)
        units = [opts.unit] if opts.unit is not None else list(range(min(channels, 8)))
        names = [f"unit {u}" for u in units]
    images, titles, lines = [], [], []
    for u, name in zip(units, names):
        img, hist = maximize_activation(ctx.model, shape, u, opts.layer, steps=opts.steps,
                                        bounds=(lo, hi), seed=opts.seed, device=ctx.device)
        images.append(ctx.to_display(img)[0])
        titles.append(f"{name}\n{hist[0]:.1f} -> {hist[-1]:.1f}")
        lines.append(f"{name}: activation {hist[0]:.3f} -> {hist[-1]:.3f}")
    file = "maximize.png" if opts.layer is None else f"maximize-{opts.layer}.png"
    path = plot_image_grid(np.stack(images), titles, ctx.path(file), cols=min(len(images), 10))
    return Result("maximize", [path], lines)


@_method("localize")
def _localize(ctx: RunContext, opts: Options) -> Result:
    test = ctx.split("test")
    n = opts.limit or 500
    size = opts.canvas or 2 * max(ctx.info.image_size)
    canvases, boxes = place_on_canvas(test.images[:n], size, opts.seed)
    x, labels = ctx.to_input(canvases), torch.from_numpy(test.labels[:n])
    try:
        res = localize(ctx.model, x, torch.from_numpy(boxes), labels, opts.map, opts.layer, opts.threshold)
    except RuntimeError as e:
        raise UserError(f"{ctx.cfg.model.name} does not run on {size}x{size} canvases ({e}); "
                        "localisation needs a fully convolutional model with global pooling") from None
    summary = res.summary() | {"canvas": size, "map": opts.map, "threshold": opts.threshold,
                               "layer": opts.layer, "seed": opts.seed}
    show = slice(0, min(6, n))
    maps = normalize(class_maps(ctx.model, x[show], labels[show].to(ctx.device), opts.map, opts.layer))
    titles = [f"{ctx.classes[int(c)]}\nIoU {iou:.2f}" for c, iou in zip(labels[show], res.iou[show])]
    drawn = [[(b.numpy(), "lime"), (p.numpy(), "red")] for b, p in zip(torch.from_numpy(boxes[show]), res.boxes[show])]
    path = plot_heatmaps(ctx.to_display(x[show]), [maps.cpu().numpy()], titles,
                         [f"{opts.map}\ntrue box green, map box red"], ctx.path("localize.png"), drawn)
    lines = [f"{n} test items on {size}x{size} canvases, {opts.map} of the true class, threshold "
             f"{opts.threshold}:",
             f"  mean IoU {summary['mean_iou']:.3f}   IoU>=0.5 {summary['gt_known_loc'] * 100:.1f}%   "
             f"top-1 loc {summary['top1_loc'] * 100:.1f}%   accuracy on canvases {summary['accuracy'] * 100:.1f}%",
             f"  centred box of mean size: mean IoU {summary['baseline_mean_iou']:.3f}   IoU>=0.5 "
             f"{summary['baseline_gt_known_loc'] * 100:.1f}%"]
    return Result("localize", [path, ctx.write_json("localize.json", summary)], lines, summary)


@_method("retrieval")
def _retrieval(ctx: RunContext, opts: Options) -> Result:
    gallery_x, gallery_y = ctx.sample("train", opts.limit or 5000)
    g = embed(ctx.model, gallery_x, opts.layer)
    x, labels, names = ctx.images(opts.images)
    idx, sims = nearest_neighbours(embed(ctx.model, x, opts.layer), g, opts.k)
    qx, qy = ctx.sample("test", 1000)
    qidx, _ = nearest_neighbours(embed(ctx.model, qx, opts.layer), g, opts.k)
    p_at_k = precision_at_k(gallery_y[qidx], qy)
    shown, titles = [], []
    for n, name in enumerate(names):
        shown.append(ctx.to_display(x[n:n + 1])[0])
        titles.append(f"{name}\n{ctx.classes[labels[n]] if labels[n] is not None else 'query'}")
        for j, s in zip(idx[n].tolist(), sims[n].tolist()):
            shown.append(ctx.to_display(gallery_x[j:j + 1])[0])
            titles.append(f"{ctx.classes[int(gallery_y[j])]}\n{s:.2f}")
    path = plot_image_grid(np.stack(shown), titles, ctx.path("retrieval.png"), cols=opts.k + 1)
    lines = [f"gallery: {len(g)} training images, embeddings of {opts.layer or 'the pre-logits'} "
             f"({g.shape[1]} values), cosine similarity",
             f"precision@{opts.k} by class over {len(qy)} test queries: {p_at_k:.3f}"]
    data = {"k": opts.k, "precision_at_k": p_at_k, "queries": len(qy), "gallery": len(g)}
    return Result("retrieval", [path, ctx.write_json("retrieval.json", data)], lines, data)


def _map_2d(kind: str) -> Callable[[RunContext, Options], Result]:
    def run(ctx: RunContext, opts: Options) -> Result:
        x, y = ctx.sample("test", opts.limit or 1000)
        e = embed(ctx.model, x, opts.layer)
        points = tsne_2d(e, seed=opts.seed) if kind == "tsne" else pca_2d(e)
        title = f"{kind.upper() if kind == 'pca' else 't-SNE'} of {len(x)} test embeddings ({opts.layer or 'pre-logits'})"
        path = plot_scatter(points.numpy(), y.numpy(), ctx.classes, ctx.path(f"{kind}.png"), title)
        return Result(kind, [path], [title])
    return run


_method("tsne")(_map_2d("tsne"))
_method("pca")(_map_2d("pca"))


def explain(run: TrainedRun | RunContext, method: str, options: Options | None = None) -> Result:
    """Run ``method`` (one of :data:`METHODS`) on a trained run and write its outputs."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    ctx = run if isinstance(run, RunContext) else RunContext(run)
    return METHODS[method](ctx, options or Options())


__all__ = ["METHODS", "Options", "Result", "RunContext", "explain"]
