"""One-stage detectors on generated scenes, vislab's and torchvision's, in one table.

Every vislab detector with the same budget, and torchvision's ``RetinaNet`` and ``SSD`` classes
trained side by side on the same backbone.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_detectors            # the table (about 45 min; --ablation: 60)
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_detectors --reuse    # keep the rows done
    .venv/bin/python -m benchmarks.bench_detectors --ablation                   # + focal / BCE / BCE+HNM
    .venv/bin/python -m benchmarks.bench_detectors --two-stage runs/bench_two_stage/rows.json
    .venv/bin/python -m benchmarks.bench_detectors --quick                      # smoke run: seconds per model
    .venv/bin/python -m benchmarks.bench_detectors --device cuda                # on a GPU

vislab rows: the named recipes ``retinanet``, ``ssd``, ``centernet`` and ``yolov3`` (skipped,
with a printed line, while its recipe does not exist), each trained by the one engine
(``vislab.tasks.runner.train``) on its own scenes and epochs (the recipes share them: 6,000
training scenes of 64x64, 8 epochs, AdamW lr 2e-3, one-cycle, batch 32, grad clip 10) and scored
by ``vislab.tasks.runner.evaluate`` (COCO box AP on the 1,000 test scenes; the run writes
``eval.json``, ``eval_gt.json`` and ``eval_detections.json``).  ``--epochs`` / ``--train-scenes``
change the budget of every row alike.

torchvision rows: ``tv-retinanet`` and ``tv-ssd`` are torchvision's ``RetinaNet`` and ``SSD``
classes wrapped as vislab detection models (``tv_retinanet``, ``tv_ssd`` in
:mod:`vislab.detection.tv_detection`), so that the SAME engine trains them with the same data, batches, optimiser, schedule,
grad clipping and epochs as the recipe they copy, and the same evaluation scores them -- simpler
and more honest than a second training loop that would have to copy all of that.  Shared with the
vislab model: the registry backbone and its feature extractor (vislab's FPN for RetinaNet,
vislab's extra layers for SSD: identical modules, so the comparison is about what torchvision
brings), the anchor sizes / ratios (torchvision's ``AnchorGenerator``) or default boxes
(torchvision's ``DefaultBoxGenerator``, same ratios and scales), subnet depth (torchvision's
4-conv RetinaNet subnets cut to the recipe's ``num_convs``), matcher thresholds, score / NMS
thresholds, candidates and detections per image.  torchvision's own: heads and their init,
matching, loss (RetinaNet: focal loss normalised per image then averaged, box term L1 -- the
vislab recipe uses smooth L1 with beta 0.1 over the batch's positives; SSD: as vislab),
postprocessing, and its ``GeneralizedRCNNTransform`` set to change nothing (the scenes arrive
normalised and at their size: min_size = max_size = scene size, mean 0, std 1; it still runs a
bilinear resize at scale 1, the identity, inside torchvision's inference time).  Parameters and
MACs come out equal to the vislab model's; their runs load, evaluate and detect like any other.  Times of a --quick run include each process's
first-model warm-up and mean nothing; the full run's minutes of training do not notice it.

Columns: COCO box AP, AP50, AP75, AP small / medium / large, AP50any (AP50 with every class made
one: how well the objects are found; the gap to AP50 is class confusion), parameters, MACs of one scene
(``vislab.analysis.summarize``; 'n/a' where it cannot count a model), training seconds and training
images/s, inference ms per image (batch 1, postprocessing included, best of 3 passes over the first
test scenes) and frames per second at the scene size; the machine's measured CPU sgemm is printed
beside the times (with ``--device cuda`` too: it is not the GPU's). ``--ablation``: RetinaNet with
``cls_loss`` focal, bce and bce_hard_negatives, same budget, its own table. ``--two-stage
ROWS.json``: rows of the two-stage benchmark (a JSON list, or a ``{name: row}`` mapping, of rows
with this table's keys: ``AP``, ``AP50``, ``APs``, ``APm``, ``APl``, ``params``, ``macs``,
``train_s``, ``train_img_s``, ``infer_ms``, ``fps``; missing ones print '-') read into the same
table and plot (`benchmarks/bench_two_stage.py` writes them to `runs/bench_two_stage/rows.json`). Each row is saved as ``OUT/NAME.json`` as soon
as it is measured; ``--reuse`` keeps those (whatever options made them: give each budget its own
``--out``). The plot of AP against inference time goes to ``docs/images/detectors_ap_vs_time.png``
on a full run (``--images-dir ''``: none).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from benchmarks.common import measured_rows, measured_sgemm_gflops
from vislab.analysis import summarize
from vislab.config import load_config
from vislab.models.registry import default_kwargs
from vislab.tasks import load_run
from vislab.tasks.detection import detect_batches, scene_options
from vislab.tasks.runner import evaluate, train

RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vislab", "recipes")
VISLAB = ("retinanet", "ssd", "centernet", "yolov3")
TORCHVISION = {"tv-retinanet": ("retinanet", "tv_retinanet"), "tv-ssd": ("ssd", "tv_ssd")}
PAIRS = {"retinanet": "tv-retinanet", "ssd": "tv-ssd"}      # timed side by side (interleaved_speed)
CLS_LOSSES = ("focal", "bce", "bce_hard_negatives")
COCO_KEYS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "APs": "APs", "APm": "APm", "APl": "APl"}
# --quick: narrow models on a few scenes, seconds per model (the test's path)
QUICK = ["data.limit_train=64", "data.kwargs.val=16", "data.kwargs.test=24", "train.epochs=1",
         "model.kwargs.backbone_kwargs={widths: [8, 16, 32, 64], stem_width: 8}"]
QUICK_WIDTH = {"fpn_chs": 16, "extra_chs": [32, 32], "neck_chs": 16, "head_chs": 16}
INFER_SCENES = 50


# ----------------------------------------------------------------------------- the rows

def _yaml(x) -> str:
    """A Python value as a YAML flow literal for ``--set``-style overrides."""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in x) + "]"
    return str(x)


def _torchvision_overrides(recipe: str, model: str, base: list[str]) -> list[str]:
    """``model.name`` and ``model.kwargs`` of the torchvision copy of ``recipe``: the recipe's
    kwargs that the torchvision factory takes, plus the scene size; the others are printed."""
    cfg = load_config(recipe, base)
    takes = set(default_kwargs(model))
    kwargs = {k: v for k, v in cfg.model.kwargs.items() if k in takes}
    dropped = sorted(set(cfg.model.kwargs) - takes)
    if dropped:
        print(f"  {model}: torchvision's class has its own {', '.join(dropped)} (the recipe's not applied)")
    kwargs["image_size"] = cfg.data.kwargs["image_size"]
    return [f"model.name={model}", f"model.kwargs={_yaml(kwargs)}"]


def plan(models: list[str], base: list[str], quick: bool,
         torchvision: dict[str, tuple[str, str]] = TORCHVISION) -> dict[str, tuple[str, list[str]]]:
    """Name -> (recipe, overrides) of each row to run (``torchvision``: row name -> (the recipe it
    copies, torchvision's model)); a vislab detector without a recipe yet is skipped with a printed line."""
    out = {}
    for name in models:
        if name in torchvision:
            recipe, model = torchvision[name]
            extra = _quick_width(recipe) if quick else []
            out[name] = (recipe, extra + _torchvision_overrides(recipe, model, base + extra))
        elif os.path.exists(os.path.join(RECIPES_DIR, f"{name}.yaml")):
            out[name] = (name, _quick_width(name) if quick else [])
        else:
            print(f"  {name}: skipped (no recipe vislab/recipes/{name}.yaml yet)")
    return out


def _quick_width(recipe: str) -> list[str]:
    """Narrow neck / head widths for ``--quick``: those of the recipe's keys in ``QUICK_WIDTH``."""
    kwargs = load_config(recipe, []).model.kwargs
    return [f"model.kwargs.{k}={_yaml(v)}" for k, v in QUICK_WIDTH.items() if k in kwargs]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference_ms(model: nn.Module, x: Tensor, passes: int = 3) -> float:
    """Milliseconds per image, batch 1, postprocessing included: the best of ``passes`` passes over ``x``."""
    device = x.device
    detect_batches(model, x[:1], 1)                       # warm-up
    best = math.inf
    for _ in range(passes):
        _sync(device)
        t0 = time.perf_counter()
        detect_batches(model, x, 1)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / len(x)


def count_macs(model: nn.Module, input_size: tuple[int, ...], name: str) -> int | None:
    """MACs of one scene (``vislab.analysis.summarize``), counted on a real forward pass of random
    input: its meta-tensor pass would move tensors that are plain attributes (torchvision's
    ``AnchorGenerator.cell_anchors``) to the meta device for good.  None (printed) if it fails."""
    try:
        return summarize(model, input_size, meta=False).macs
    except Exception as e:  # noqa: BLE001  (a forward the counter cannot follow: say so in the column)
        print(f"  {name}: MACs not counted ({type(e).__name__}: {e})"[:200])
        return None


def measure(name: str, recipe: str, overrides: list[str], out: str, device: str, infer_scenes: int) -> dict:
    """Train ``recipe`` with ``overrides`` into ``OUT/runs/NAME``, evaluate it, time it: one row."""
    from vislab.detection.scenes import make_scenes

    cfg = load_config(recipe, overrides)
    run_dir = os.path.join(out, "runs", re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
    sgemm = measured_sgemm_gflops(best_of=3, n=1024)
    res = train(cfg, run_dir, fresh=True, progress=False, log=lambda *a: None)
    ev = evaluate(run_dir, device=device)
    run = load_run(run_dir, device, which="best")
    scene_cfg, opts = scene_options(run.info.extra["scenes"])
    size = tuple(run.info.image_size)
    test = make_scenes("test", min(infer_scenes, opts["test"]), scene_cfg, opts["seed"], run.config.data.root)
    x = run.norm.from_uint8(test.images, run.device)
    macs = count_macs(run.model, (run.info.in_chans, *size), name)
    n_train = min(opts["train"], cfg.data.limit_train or opts["train"])
    ms = inference_ms(run.model, x)
    coco, segm, pq = ev["coco"], ev.get("coco_segm") or {}, ev.get("panoptic") or {}
    return {"name": name, "recipe": recipe, "model": cfg.model.name, "overrides": overrides,
            **{k: coco[v] for k, v in COCO_KEYS.items()}, "AR100": coco.get("AR100"),
            "mask_AP": segm.get("AP"), "mask_AP50": segm.get("AP50"),
            **{k: pq.get(k) for k in ("pq", "sq", "rq", "pq_things", "pq_stuff") if pq},
            "test_scenes": ev["num_images"], "test_objects": ev["num_objects"], "image_size": list(size),
            "params": sum(p.numel() for p in run.model.parameters()), "macs": macs,
            "epochs": cfg.train.epochs, "train_scenes": n_train, "train_s": res.train_time_s,
            "train_img_s": n_train * cfg.train.epochs / res.train_time_s, "infer_ms": ms, "fps": 1e3 / ms,
            "infer_scenes": len(x), "sgemm_gflops": sgemm, "threads": torch.get_num_threads(),
            "device": str(run.device) if run.device.type != "cuda" else torch.cuda.get_device_name(run.device),
            "run_dir": run_dir}


def collect(rows_plan: dict[str, tuple[str, list[str]]], base: list[str], out: str, reuse: bool, device: str,
            infer_scenes: int) -> list[dict]:
    """Each planned row measured (or, with ``reuse``, read from ``OUT/NAME.json``)."""
    jobs = [(name, os.path.join(out, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".json"),
             partial(measure, name, recipe, base + overrides, out, device, infer_scenes))
            for name, (recipe, overrides) in rows_plan.items()]
    rows = measured_rows(jobs, reuse, lambda r: f"AP {r['AP']:.3f} AP50 {r['AP50']:.3f} after {r['train_s']:.0f} s "
                                                      "of training")
    for r in rows:                  # rows measured before the column existed get it from their files
        if r.get("AP50_any") is None:
            r["AP50_any"] = class_agnostic_ap50(r["run_dir"])
    return rows


def class_agnostic_ap50(run_dir: str) -> float | None:
    """AP50 of the run's test detections with every class made one (``eval_gt.json`` /
    ``eval_detections.json``): how well the objects are found, whatever the class said -- the
    gap to AP50 is the confusion between classes.  None when the run wrote no files."""
    from vislab.metrics.detection import evaluate_detections

    paths = [os.path.join(run_dir, f) for f in ("eval_gt.json", "eval_detections.json")]
    if not all(os.path.exists(p) for p in paths):
        return None
    with open(paths[0]) as f:
        gt = json.load(f)
    with open(paths[1]) as f:
        dets = json.load(f)
    index = {im["id"]: i for i, im in enumerate(gt["images"])}

    def table(items: list[dict], is_gt: bool) -> list[dict]:
        per: list[list[dict]] = [[] for _ in index]
        for a in items:
            per[index[a["image_id"]]].append(a)
        out = []
        for anns in per:
            boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
            d = {"boxes": boxes, "labels": torch.zeros(len(anns), dtype=torch.long)}
            if is_gt:
                d["area"] = torch.tensor([float(a["area"]) for a in anns])
                d["iscrowd"] = torch.tensor([int(a.get("iscrowd", 0)) for a in anns])
            else:
                d["scores"] = torch.tensor([float(a["score"]) for a in anns])
            out.append(d)
        return out

    return evaluate_detections(table(dets, False), table(gt["annotations"], True), ["object"]).as_dict()["AP50"]


def read_two_stage(path: str) -> list[dict]:
    """Rows of the two-stage benchmark: a JSON list of rows or a ``{name: row}`` mapping."""
    with open(path) as f:
        data = json.load(f)
    rows = [{"name": k, **v} for k, v in data.items()] if isinstance(data, dict) else list(data)
    for r in rows:
        if "name" not in r or "AP" not in r:
            raise ValueError(f"{path}: every two-stage row needs at least 'name' and 'AP' (got keys {sorted(r)})")
        r["source"] = path
    return rows


# ----------------------------------------------------------------------------- the table and plot

def _f(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def print_table(rows: list[dict], sgemm: float) -> None:
    """The one table; a ``mask AP`` column when a row has one (Mask R-CNN)."""
    masks = any(r.get("mask_AP") is not None for r in rows)
    print(f"{'detector':31s} {'AP':>6s} {'AP50':>6s} {'AP75':>6s} {'APs':>6s} {'APm':>6s} {'APl':>6s} "
          f"{'AP50any':>7s} " + ("mask AP " if masks else "")
          + f"{'params':>8s} {'GMACs':>7s} {'train s':>8s} {'img/s':>7s} {'ms/img':>7s} {'fps':>7s}  "
          f"(sgemm {sgemm:.0f} GFLOP/s)")
    for r in rows:
        macs = "n/a" if r.get("macs") is None else f"{r['macs'] / 1e9:.3f}"
        params = "-" if r.get("params") is None else f"{r['params'] / 1e6:.2f}M"
        name = r["name"] + (" (read)" if "source" in r else "")
        print(f"{name:31s} {_f(r.get('AP'), '6.3f')} {_f(r.get('AP50'), '6.3f')} {_f(r.get('AP75'), '6.3f')} "
              f"{_f(r.get('APs'), '6.3f')} {_f(r.get('APm'), '6.3f')} {_f(r.get('APl'), '6.3f')} "
              f"{_f(r.get('AP50_any'), '7.3f'):>7s} " + (f"{_f(r.get('mask_AP'), '7.3f'):>7s} " if masks else "")
              + f"{params:>8s} {macs:>7s} {_f(r.get('train_s'), '8.1f')} {_f(r.get('train_img_s'), '7.1f')} "
              f"{_f(r.get('infer_ms'), '7.2f')} {_f(r.get('fps'), '7.1f')}")
    if rows and "test_scenes" in rows[0]:
        r = rows[0]
        epochs = "/".join(str(e) for e in sorted({x["epochs"] for x in rows if "epochs" in x}))
        print(f"scenes {r['image_size'][0]}x{r['image_size'][1]}: {r['train_scenes']} training x {epochs} "
              f"epochs (each run's recipe), {r['test_scenes']} test; inference batch 1 on {r['infer_scenes']} scenes, {r['device']}, "
              f"{r['threads']} threads; APs/APm/APl -1 where no object of that size; AP50any: AP50 with every "
              "class made one (objects found, whatever the class)")


def interleaved_speed(pairs: dict[str, dict[str, tuple[str, list[str]]]], device: str = "cpu", steps: int = 8,
                      rounds: int = 3, infer_scenes: int = 20) -> dict[str, dict[str, float]]:
    """Like-for-like speed of each pair, vislab's model against torchvision's: both built from the
    same recipe (``pairs``: pair name -> {row name: (recipe, overrides)}), trained in alternating
    rounds of ``steps`` AdamW steps on the same two batches of the recipe's scenes (batch size
    and learning rate of the recipe), then timed at inference (batch 1, ``infer_scenes``
    scenes), alternating again; the best round of each.  Alternating rounds in one process is
    what makes the ratio fair on a shared machine: the full runs' training times are taken
    minutes apart, under whatever else runs then.  Returns {row name: {train_img_s, infer_ms}}."""
    from vislab.detection.scenes import make_scenes
    from vislab.models.registry import create_model

    out: dict[str, dict[str, float]] = {}
    for members in pairs.values():
        models, opts, batches = {}, {}, None
        for name, (recipe, overrides) in members.items():
            cfg = load_config(recipe, overrides)
            torch.manual_seed(0)
            models[name] = create_model(cfg.model.name, num_classes=10, in_chans=3, **cfg.model.kwargs).to(device)
            opts[name] = torch.optim.AdamW(models[name].parameters(), lr=cfg.optim.lr)
            if batches is None:
                scene_cfg, sopts = scene_options(cfg.data.kwargs)
                bs = cfg.train.batch_size
                scenes = make_scenes("train", 2 * bs, scene_cfg, sopts["seed"])
                x = scenes.images.float() / 255
                x = ((x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)).to(device)
                targets = [{k: v.to(device) for k, v in scenes[i][1].items()} for i in range(len(scenes))]
                batches = [(x[:bs], targets[:bs]), (x[bs:], targets[bs:])]
                infer_x = x[:infer_scenes]

        best = {name: math.inf for name in models}
        for name, model in models.items():
            _train_steps(model, opts[name], batches, 2, device)                 # warm-up
        for _ in range(rounds):
            for name, model in models.items():
                best[name] = min(best[name], _train_steps(model, opts[name], batches, steps, device))
        ms = {name: math.inf for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                ms[name] = min(ms[name], inference_ms(model, infer_x, passes=1))
        for name in models:
            out[name] = {"train_img_s": steps * len(batches[0][0]) / best[name], "infer_ms": ms[name]}
    return out


def _train_steps(model: nn.Module, opt: torch.optim.Optimizer, batches: list, n: int, device: str) -> float:
    """Seconds of ``n`` training steps cycling over ``batches`` of ``(images, targets)``."""
    model.train()
    _sync(torch.device(device))
    t0 = time.perf_counter()
    for i in range(n):
        xb, tb = batches[i % len(batches)]
        loss = model(xb, tb)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(torch.device(device))
    return time.perf_counter() - t0


def print_speed(speed: dict[str, dict[str, float]], pairs: dict[str, dict], sgemm: float) -> None:
    print(f"\nlike for like, alternating rounds in one process (sgemm {sgemm:.0f} GFLOP/s):")
    for members in pairs.values():
        names = [n for n in members if n in speed]
        if len(names) == 2:
            a, b = (speed[n] for n in names)
            print(f"  {names[0]} vs {names[1]}: training {a['train_img_s']:.1f} vs {b['train_img_s']:.1f} images/s "
                  f"({a['train_img_s'] / b['train_img_s']:.2f}x), inference {a['infer_ms']:.2f} vs "
                  f"{b['infer_ms']:.2f} ms per image ({b['infer_ms'] / a['infer_ms']:.2f}x)")


def versus(a: dict, b: dict, speed: dict[str, dict[str, float]]) -> str:
    """The goal line of vislab's row ``a`` against torchvision's copy ``b``: AP within one point,
    training images/s at least theirs (from the alternating rounds when ``speed`` has them)."""
    sa, sb = speed.get(a["name"], a), speed.get(b["name"], b)
    how = "alternating rounds" if a["name"] in speed else "full runs"
    return (f"goal {a['name']} vs torchvision's, same backbone and budget: AP {a['AP']:.3f} vs {b['AP']:.3f} "
            f"({100 * (a['AP'] - b['AP']):+.1f} points; goal >= -1), training {sa['train_img_s']:.1f} vs "
            f"{sb['train_img_s']:.1f} images/s ({sa['train_img_s'] / sb['train_img_s']:.2f}x, {how}; goal >= 1)")


def goals(rows: list[dict], speed: dict[str, dict[str, float]] | None = None) -> None:
    """The issue's goals, each with the figures that decide it."""
    by = {r["name"]: r for r in rows}
    speed = speed or {}
    for ours, theirs in PAIRS.items():
        if ours in by and theirs in by:
            print(versus(by[ours], by[theirs], speed))
    one_stage = [r for r in rows if r["name"] in VISLAB]
    if one_stage:
        best = max(one_stage, key=lambda r: r["AP50"])
        print(f"goal best one-stage AP50 >= 0.80: {best['name']} {best['AP50']:.3f} (found whatever the class, "
              f"AP50any: {_f(best.get('AP50_any'), '.3f')})")


def plot(rows: list[dict], path: str) -> str:
    """Box AP against inference ms per image (log x), one labelled point per detector: vislab's
    one-stage (circles) and two-stage (squares, rows read from the two-stage benchmark), and
    torchvision's copies (orange)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    placed: list[tuple[float, float]] = []
    for r in sorted((r for r in rows if r.get("infer_ms") is not None), key=lambda r: r["infer_ms"]):
        two = "source" in r
        kind = ("torchvision " if r["name"].startswith("tv-") else "vislab ") + ("two-stage" if two else "one-stage")
        x, y = r["infer_ms"], r["AP"]
        ax.scatter(x, y, color="C1" if r["name"].startswith("tv-") else "C0", marker="s" if two else "o",
                   label=kind)
        near = any(abs(math.log10(x / px)) < 0.12 and abs(y - py) < 0.012 for px, py in placed)
        placed.append((x, y))
        ax.annotate(r["name"], (x, y), textcoords="offset points", fontsize=8,
                    xytext=(-5, -11) if near else (5, 3), ha="right" if near else "left")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="best")
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 1.6)                      # room for the slowest one's label
    ax.set_xticks([t for t in (2, 5, 10, 20, 50, 100, 200, 500) if lo <= t <= hi * 1.6])
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("inference ms per image, batch 1, postprocessing and proposals included (log scale)")
    ax.set_ylabel("COCO box AP (test scenes)")
    ax.set_title("Detectors on generated scenes: accuracy against inference time")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- main

def parse_args(description: str, names: Sequence[str], out: str, argv: list[str] | None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The detector benchmarks' shared options (rows ``names``, budget, output folder, reuse,
    device, seed, quick), plus ``extra``'s; returns the arguments and the chosen rows."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--models", nargs="+", default=None, help=f"rows to run (default: all of {', '.join(names)})")
    p.add_argument("--epochs", type=int, help="epochs of every model (default: the recipes')")
    p.add_argument("--train-scenes", type=int, help="training scenes of every model (default: the recipes')")
    if extra:
        extra(p)
    p.add_argument("--out", default=out, help="per-row JSON results and run directories")
    p.add_argument("--reuse", action="store_true", help="keep the rows already measured in --out")
    p.add_argument("--images-dir", default="docs/images", help="where the figures go on a full run ('' for none)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: the engine trains and evaluates every row there")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 64 training scenes, 1 epoch, 24 test scenes, narrow models")
    args = p.parse_args(argv)
    models = args.models or list(names)
    unknown = set(models) - set(names)
    if unknown:
        p.error(f"--models: unknown {', '.join(sorted(unknown))}; choose among {', '.join(names)}")
    return args, models


def budget_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides every row of a run shares: seed, device, ``--quick``, the budget."""
    base = [f"seed={args.seed}", f"device={args.device}"]
    if args.quick:
        base += QUICK
    if args.epochs:
        base.append(f"train.epochs={args.epochs}")
    if args.train_scenes:
        base.append(f"data.limit_train={args.train_scenes}")
    return base


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ablation", action="store_true", help="also RetinaNet with focal / bce / bce_hard_negatives")
        p.add_argument("--two-stage", metavar="ROWS.json", help="rows of the two-stage benchmark to add to the table")

    args, models = parse_args(__doc__.splitlines()[0], [*VISLAB, *TORCHVISION], "runs/bench_detectors", argv, extra)
    if os.path.exists(os.path.join(RECIPES_DIR, "yolov3.yaml")):
        import importlib
        try:                               # its model registers itself when imported
            importlib.import_module("vislab.detection.yolov3")
        except ImportError:
            pass
    base = budget_overrides(args)
    os.makedirs(args.out, exist_ok=True)
    sgemm = measured_sgemm_gflops(best_of=5)
    print(f"sgemm: {sgemm:.0f} GFLOP/s fp32 (2048x2048, {torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"device {args.device}", flush=True)
    infer_scenes = 8 if args.quick else INFER_SCENES
    plan_rows = plan(models, base, args.quick)
    rows = collect(plan_rows, base, args.out, args.reuse, args.device, infer_scenes)
    if args.two_stage:
        rows += read_two_stage(args.two_stage)
    print()
    print_table(rows, sgemm)
    pairs = {ours: {ours: plan_rows[ours], theirs: plan_rows[theirs]} for ours, theirs in PAIRS.items()
             if ours in plan_rows and theirs in plan_rows}
    speed = interleaved_speed(pairs, args.device, steps=2 if args.quick else 8, rounds=2 if args.quick else 3,
                              infer_scenes=4 if args.quick else 20)
    print_speed(speed, pairs, sgemm)
    goals(rows, speed)
    result = {"detectors": rows, "speed": speed}
    if args.ablation:
        focal = next((r for r in rows if r["name"] == "retinanet"), None)   # the recipe's loss is focal
        ablation_plan = {f"retinanet ({loss})": ("retinanet", [*(_quick_width("retinanet") if args.quick else []),
                                                               f"model.kwargs.cls_loss={loss}"])
                         for loss in CLS_LOSSES if not (focal and loss == "focal")}
        ablation = ([{**focal, "name": "retinanet (focal)"}] if focal else []) + collect(
            ablation_plan, base, args.out, args.reuse, args.device, infer_scenes)
        print("\nfocal-loss ablation: RetinaNet, same budget, only model.kwargs.cls_loss differs")
        print_table(ablation, sgemm)
        result["ablation"] = ablation
    if args.images_dir and not args.quick and args.models is None:
        print("plot:", plot(rows, os.path.join(args.images_dir, "detectors_ap_vs_time.png")))
    return result


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f}s")
