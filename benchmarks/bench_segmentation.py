"""Semantic segmentation on generated scenes: every model of the notes with the same budget, one
table, and torchvision's FCN and DeepLab v3 heads trained side by side on the same backbone.

    python -m benchmarks.bench_segmentation                  # the whole table (see docs/segmentation.md)
    python -m benchmarks.bench_segmentation --only fcn8s deeplabv3 tv-deeplabv3
    python -m benchmarks.bench_segmentation --epochs 4       # a smaller budget for every model
    python -m benchmarks.bench_segmentation --quick          # smoke run (minutes)
    python -m benchmarks.bench_segmentation --device cuda    # on a GPU

Rows: the per-pixel baseline (a 32x32-patch classifier trained patch-wise, evaluated densely),
FCN-32s, FCN-16s, FCN-8s, FCN-8s trained on 64x64 random crops instead of whole images (the
notes' "patch-wise vs full-image training"), U-Net, DeepLab v3 (and v3+), and torchvision's
``FCN`` + ``FCNHead`` and ``DeepLabV3`` + ``ASPP`` on the same half-width ResNet-18 and budget.
Each is trained by ``vislab train RECIPE`` with the same data, optimiser, schedule and epochs,
and scored by ``vislab evaluate`` on the 500 test scenes.  Columns: pixel accuracy, mean
accuracy, mIoU, frequency-weighted IoU, parameters, MACs per 128x128 image, training time,
training images per second, inference milliseconds per image (batches of 16).  For the per-pixel
baseline the script also times the slow way (every pixel's patch classified on its own) against
the dense pass and checks that they agree.  The machine's sgemm is printed beside the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time

import torch

from benchmarks.common import measured_sgemm_gflops
from vislab.analysis import summarize
from vislab.config import load_config
from vislab.models.pixel import slow_forward
from vislab.tasks import load_run
from vislab.tasks.runner import evaluate, train
from vislab.tasks.segmentation import load_split_pairs

BACKBONE = "{widths: [32, 64, 128, 256], stem_width: 32}"
MODELS = {                      # name -> (recipe, overrides)
    "seg_pixel (patches)": ("seg_pixel", []),
    "fcn32s": ("fcn32s", []),
    "fcn16s": ("fcn16s", []),
    "fcn8s": ("fcn8s", []),
    "fcn8s (crops 64)": ("fcn8s", ["segment.train_mode=crops", "segment.crop=64"]),
    "unet": ("unet", []),
    "deeplabv3": ("deeplabv3", []),
    "deeplabv3plus": ("deeplabv3plus", []),
    "tv-fcn": ("deeplabv3", ["model.name=tv_fcn", f"model.kwargs={{backbone: resnet18, backbone_kwargs: {BACKBONE}, "
                                                  "output_stride: 8}"]),
    "tv-deeplabv3": ("deeplabv3", ["model.name=tv_deeplabv3", f"model.kwargs={{backbone: resnet18, backbone_kwargs: "
                                   f"{BACKBONE}, output_stride: 16, rates: [2, 4, 6], aspp_chs: 128}}"]),
}
SIZE = (3, 128, 128)


@torch.no_grad()
def inference_ms(model: torch.nn.Module, x: torch.Tensor, reps: int = 3) -> float:
    """Milliseconds per image of the model on the batch ``x`` (best of ``reps``)."""
    model.eval()
    model(x)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        model(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / len(x)


@torch.no_grad()
def per_pixel_speedup(run, x: torch.Tensor) -> dict:
    """The per-pixel baseline on one test image: every pixel's patch classified on its own (the
    notes' slow R-CNN for segmentation) against the dense pass; the largest difference between
    their logits."""
    model = run.model.eval()
    t0 = time.perf_counter()
    slow = slow_forward(model, x[:1])
    slow_s = time.perf_counter() - t0
    dense_ms = inference_ms(model, x[:1])
    diff = float((slow - model(x[:1])).abs().max())
    return {"slow_ms": 1000 * slow_s, "dense_ms": dense_ms, "speedup": 1000 * slow_s / dense_ms, "max_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(MODELS), help="run only these rows")
    ap.add_argument("--epochs", type=int, help="epochs of every model (default: the fcn8s recipe's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every model (repeatable)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100 training scenes, 1 epoch")
    ap.add_argument("--runs", help="keep the runs in this folder (default: a temporary one)")
    ap.add_argument("--json", help="also write the table to this JSON file")
    args = ap.parse_args()
    names = args.only or list(MODELS)
    print(f"sgemm {measured_sgemm_gflops(5):.0f} GFLOP/s, {torch.get_num_threads()} threads", flush=True)
    base = [f"seed={args.seed}", f"device={args.device}", *args.overrides]
    if args.epochs:
        base.append(f"train.epochs={args.epochs}")
    if args.quick:
        base += ["data.limit_train=100", "train.epochs=1"]
    cfg0 = load_config("fcn8s", base)
    kw = cfg0.data.kwargs
    print(f"scenes {kw['image_size']}x{kw['image_size']}, {min(kw['train'], cfg0.data.limit_train or kw['train'])} "
          f"training / {kw['val']} val / {kw['test']} test, {cfg0.train.epochs} epochs, {cfg0.optim.name} "
          f"lr {cfg0.optim.lr}, batch {cfg0.train.batch_size}", flush=True)
    folder = args.runs or tempfile.mkdtemp(prefix="bench_segmentation-")
    table = {}
    for name in names:
        recipe, overrides = MODELS[name]
        cfg = load_config(recipe, base + overrides)
        res = train(cfg, os.path.join(folder, re.sub(r"[^a-z0-9]+", "-", name).strip("-")), fresh=True, progress=False,
                    log=lambda s: None)
        ev = evaluate(res.run_dir, device=args.device)
        run = load_run(res.run_dir, args.device)
        images, _, _ = load_split_pairs(run.config, "test", 16)
        x = run.norm.from_uint8(images, run.device)
        n_train = min(kw["train"], cfg.data.limit_train or kw["train"])
        row = {k: ev[k] for k in ("pixel_acc", "mean_acc", "miou", "fwiou")}
        row.update(params=sum(p.numel() for p in run.model.parameters()),
                   macs=summarize(run.model, SIZE).macs, train_s=res.train_time_s,
                   train_img_s=n_train * cfg.train.epochs / res.train_time_s,
                   infer_ms=inference_ms(run.model, x))
        if cfg.segment.train_mode == "patches":
            row["train_img_s"] = None          # patches, not images: see the note below the table
            row["patches_s"] = n_train * cfg.segment.patches_per_image * cfg.train.epochs / res.train_time_s
        if cfg.model.name == "seg_pixel" and "per_pixel" not in table:
            table["per_pixel"] = per_pixel_speedup(run, x)
        table[name] = row
        _print_row(name, row, header=len([n for n in table if n != "per_pixel"]) == 1)
    _claims(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    print(f"runs in {folder}")


def _print_row(name: str, r: dict, header: bool) -> None:
    if header:
        print(f"{'model':20s} {'pix acc':>8s} {'mean acc':>8s} {'mIoU':>7s} {'FW-IoU':>7s} {'params':>9s} "
              f"{'GMACs':>7s} {'train s':>8s} {'img/s':>7s} {'ms/img':>8s}")
    ips = "-" if r["train_img_s"] is None else f"{r['train_img_s']:.1f}"
    print(f"{name:20s} {r['pixel_acc']:8.4f} {r['mean_acc']:8.4f} {r['miou']:7.4f} {r['fwiou']:7.4f} "
          f"{r['params'] / 1e6:8.2f}M {r['macs'] / 1e9:7.3f} {r['train_s']:8.1f} {ips:>7s} {r['infer_ms']:8.2f}", flush=True)


def _claims(t: dict) -> None:
    """The notes' claims and the issue's goals, each with the figure that decides it."""
    if all(k in t for k in ("fcn8s", "fcn16s", "fcn32s")):
        a, b, c = (t[k]["miou"] for k in ("fcn8s", "fcn16s", "fcn32s"))
        holds = "holds" if a >= b >= c else "does NOT hold"
        print(f"claim FCN-8s >= FCN-16s >= FCN-32s in mIoU: {a:.4f} / {b:.4f} / {c:.4f}: {holds}")
    if "per_pixel" in t:
        p = t["per_pixel"]
        print(f"per-pixel baseline, one 128x128 image: every patch on its own {p['slow_ms']:.0f} ms, dense pass "
              f"{p['dense_ms']:.1f} ms ({p['speedup']:.0f}x); largest logit difference {p['max_diff']:.1e}")
        fcn = t.get("fcn8s")
        if fcn:
            print(f"claim per-pixel baseline orders of magnitude slower than an FCN: {p['slow_ms']:.0f} ms vs "
                  f"FCN-8s {fcn['infer_ms']:.2f} ms per image ({p['slow_ms'] / fcn['infer_ms']:.0f}x)")
    if "fcn8s (crops 64)" in t and "fcn8s" in t:
        a, b = t["fcn8s (crops 64)"], t["fcn8s"]
        print(f"patch-wise (64x64 random crops) vs full-image training of FCN-8s, same epochs: mIoU {a['miou']:.4f} "
              f"in {a['train_s']:.0f} s vs {b['miou']:.4f} in {b['train_s']:.0f} s")
    if "deeplabv3" in t and "tv-deeplabv3" in t:
        a, b = t["deeplabv3"], t["tv-deeplabv3"]
        print(f"goal vislab DeepLab v3 vs torchvision's, same backbone and budget: mIoU {a['miou']:.4f} vs "
              f"{b['miou']:.4f} ({100 * (a['miou'] - b['miou']):+.2f} points; goal >= -1), training "
              f"{a['train_img_s']:.1f} vs {b['train_img_s']:.1f} images/s ({a['train_img_s'] / b['train_img_s']:.2f}x)")
    rows = {k: v for k, v in t.items() if k != "per_pixel"}
    if rows:
        best = max(rows, key=lambda k: rows[k]["miou"])
        print(f"goal best mIoU >= 0.80: {best} {rows[best]['miou']:.4f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f}s")
