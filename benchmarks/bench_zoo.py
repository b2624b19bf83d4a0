"""The zoo trained: one member of every family of the notes on Fashion-MNIST, one recipe, one table;
and vislab's fastest CPU inference against torchvision's eager ResNet-50.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_zoo --skip-inference   # the table (about 90 min)
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_zoo --skip-inference --reuse   # keep members done
    .venv/bin/python -m benchmarks.bench_zoo --quick                 # smoke run: seconds per model

Training: one member per family (``ZOO``: the small-input variant, 1x28x28, narrowed by the
family's own width knob where its smallest published member would not fit this CPU's budget)
trains through ``vislab.tasks.runner.train`` (the one engine) with one recipe (``RECIPE``: AdamW
lr 2e-3, weight decay 0.05, one-cycle, batch 128, horizontal flips, label smoothing 0.1; 1,000
training images held out for validation) for its own budget: epochs and training images, sized
from its measured training images/s so that the whole table takes about 90 minutes of one core
(on a shared 2-core machine one thread per process was measured ~10x faster than two, whose
OpenMP threads wait on each other when the other core is busy).  Each row: test top-1 on the
full 10,000 test images with the weights after the last epoch, top-1 of the same weights on
2,000 of the images they trained on (overfitting or underfitting), parameters and MACs at 1x28x28
(``vislab.analysis.summarize``), training images/s (the validation of 1,000 images per epoch
included), inference ms per image (batches of 256, eval mode, no grad), training seconds and the
validation top-1 after each epoch.  Each member's row is saved as ``OUT/MODEL.json`` as soon as it
is measured; ``--reuse`` keeps those, so a run cut short loses at most the member in progress.
The plots of test top-1 against MACs and against parameters go to
``docs/images/zoo_accuracy_{macs,params}.png``.

Inference: torchvision's ResNet-50 in eager mode (the reference) and vislab's ResNet-50 carrying
the same weights (so the logits must agree), run on the same batch with the same threads under
``torch.inference_mode``, timed in interleaved rounds (median):
  vislab eager            : the model as built
  vislab fused + CL       : BN folded into the convolutions (``fuse_bn``), channels_last
  vislab fused + CL + compile : the same through ``torch.compile`` (inductor, frozen weights)
Prints milliseconds per batch, images/s and the speed-up over the reference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import torch
from torch import Tensor

from benchmarks.common import measured_rows, measured_sgemm_gflops
from vislab.analysis import fuse_bn, summarize
from vislab.config import Config, apply_override
from vislab.models import create_model

GOAL = 0.91                      # the bar: a plain two-layer CNN reaches about 92%
RECIPE = ("optim.name=adamw", "optim.lr=0.002", "optim.weight_decay=0.05", "sched.name=onecycle",
          "train.batch_size=128", "train.label_smoothing=0.1", "data.augment.flip=true",
          "data.val_size=1000")


@dataclass(frozen=True)
class Member:
    """One family's representative: a registered name, its constructor options, its budget."""
    family: str
    name: str
    epochs: int
    kwargs: dict = field(default_factory=dict)
    size: str = "as published"       # how it differs from the registered default, for the table
    train_images: int | None = None  # None: all 59,000 (a subset for the slowest members)


# One member per family of the notes, in the notes' order.  Budgets (epochs, training images)
# were sized from each member's measured training images/s on this CPU (one thread): about 3-7
# minutes each, 80 minutes of training in all.  The cheap members get the epochs they need to
# pass 91% (LeNet-5, VGG, NiN, ResNet-20, SE-ResNet); the members whose convolutions run far
# below this CPU's sgemm (depthwise, grouped, concatenating designs) get what fits, one epoch or
# part of one.  Narrowed members keep the family's design and small-input stem; their width is
# the family's own knob.
ZOO = [
    Member("LeNet-5", "lenet5", 20),
    Member("AlexNet", "alexnet", 3, {"widths": [16, 48, 96, 64, 64], "hidden": 256}, "widths/4, MLP 256"),
    Member("ZFNet", "zfnet", 2, {"widths": [12, 32, 48, 48, 32], "hidden": 256}, "widths/8, MLP 256"),
    Member("VGG", "vgg11_bn", 12, {"widths": [16, 32, 64, 128, 128], "hidden": 256}, "VGG-11-BN, widths/4, MLP 256"),
    Member("NiN", "nin", 8, {"width_mult": 0.25}, "width 0.25"),
    Member("GoogLeNet", "googlenet", 1, {"width_mult": 0.125}, "width 0.125"),
    Member("Inception v3", "inception_v3", 1, {"width_mult": 0.125}, "width 0.125", train_images=40000),
    Member("ResNet", "resnet20", 4),
    Member("WRN", "wrn_16_2", 2),
    Member("ResNeXt", "resnext50_32x4d", 1, {"widths": [8, 16, 32, 64], "stem_width": 16, "groups": 8,
                                              "base_width": 16}, "ResNeXt-50 8x2d, widths/8"),
    Member("SE-ResNet", "se_resnet18", 3, {"widths": [16, 32, 64, 128], "stem_width": 16}, "widths/4"),
    Member("DenseNet", "densenet_bc_40_12", 1, train_images=40000),
    Member("MobileNet", "mobilenet_v2", 1, {"width_mult": 0.35}, "width 0.35"),
    Member("EfficientNet", "efficientnet_b0", 1, {"width_mult": 0.35}, "width 0.35"),
    Member("ViT", "vit_ti_16", 1, {"patch_size": 7}, "7x7 patches (4x4 grid)"),
]


# ------------------------------------------------------------------------------ training

def train_member(m: Member, out: str, limit_train: int | None, epochs: int | None,
                 test_images: int | None, device: str = "cpu") -> dict:
    """Train ``m`` through the engine into ``OUT/runs/NAME``, test it, and return its row."""
    from vislab.data.datasets import load_split
    from vislab.tasks import load_run
    from vislab.tasks.classification import split_train_val
    from vislab.tasks.runner import train

    cfg = Config()
    epochs = epochs or m.epochs
    limit_train = limit_train or (m.train_images + 1000 if m.train_images else None)
    for item in (f"model.name={m.name}", f"model.kwargs={_yaml(m.kwargs)}", f"train.epochs={epochs}",
                 *RECIPE, f"device={device}", *(["train.amp=true"] if device.startswith("cuda") else []),
                 *([f"data.limit_train={limit_train}"] if limit_train else [])):
        apply_override(cfg, item)
    run_dir = os.path.join(out, "runs", m.name)
    sgemm = measured_sgemm_gflops(best_of=3, n=1024)
    result = train(cfg, run_dir, fresh=True, progress=False, log=lambda *a: None)
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    run = load_run(run_dir, device, which="last")
    test, train_split = load_split("fashion_mnist", "test"), load_split("fashion_mnist", "train")
    n = test_images or len(test.labels)
    test_top1, infer_s = _top1(run, test.images[:n], test.labels[:n])
    # The same weights on 2,000 images they were trained on (no augmentation): far above test
    # top-1 means overfitting, level with it underfitting.
    trained, _ = split_train_val(min(len(train_split.labels), limit_train or 10**9), cfg, None)
    seen = trained[:min(n, 2000)]
    train_top1, _ = _top1(run, train_split.images[seen], train_split.labels[seen])
    s = summarize(run.model, tuple(test.images.shape[1:]))
    n_train = len(trained)
    return {"family": m.family, "name": m.name, "kwargs": m.kwargs, "size": m.size,
            "epochs": epochs, "train_images": n_train, "images_seen": n_train * epochs,
            "test_top1": test_top1, "test_images": n, "train_eval_top1": train_top1,
            "params": s.params, "macs": s.macs,
            "train_img_s": n_train * epochs / result.train_time_s, "train_s": result.train_time_s,
            "infer_ms": 1e3 * infer_s / n, "threads": torch.get_num_threads(), "sgemm_gflops": sgemm,
            "device": device if device == "cpu" else torch.cuda.get_device_name(),
            "train_top1": [r.get("train_top1") for r in rows if r.get("epoch_end")],
            "val_top1": [r.get("val_top1") for r in rows if r.get("epoch_end")],
            "steps": [[r["step"], r.get("train_top1")] for r in rows if not r.get("epoch_end")]}


def _top1(run, images, labels) -> tuple[float, float]:
    """Top-1 of a trained run on uint8 images, and the seconds it took (batches of 256), in
    channels_last as it trained (``load_run`` returns contiguous weights: GoogLeNet 3x slower)."""
    device = next(run.model.parameters()).device
    run.model.to(memory_format=torch.channels_last)
    x = run.norm.from_uint8(images, channels_last=True).to(device)
    y = torch.from_numpy(labels).long().to(device)
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        pred = torch.cat([run.model(b).argmax(1) for b in x.split(256)])
    _sync(device)
    return (pred == y).float().mean().item(), time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _yaml(d: dict) -> str:
    """``{a: 1, b: [2, 3]}`` for ``model.kwargs=...``."""
    def v(x):
        if isinstance(x, bool):
            return str(x).lower()
        if isinstance(x, (list, tuple)):
            return "[" + ", ".join(v(e) for e in x) + "]"
        return str(x)
    return "{" + ", ".join(f"{k}: {v(x)}" for k, x in d.items()) + "}"


def _curve(row: dict) -> str:
    """Validation top-1 per epoch: ``0.85 0.89 0.91``."""
    return " ".join(f"{a:.3f}" for a in row["val_top1"] if a is not None)


def print_table(rows: list[dict]) -> None:
    print(f"{'family':13s} {'model':16s} {'size':28s} {'ep':>3s} {'test top1':>9s} {'params':>9s} "
          f"{'MMACs':>7s} {'train img/s':>11s} {'infer ms/img':>12s} {'train s':>7s} {'train top1':>10s}  "
          "val top1 per epoch")
    for r in rows:
        print(f"{r['family']:13s} {r['name']:16s} {r['size']:28s} {r['epochs']:>3d} {r['test_top1']:>9.4f} "
              f"{r['params']:>9,} {r['macs'] / 1e6:>7.1f} {r['train_img_s']:>11.0f} {r['infer_ms']:>12.3f} "
              f"{r['train_s']:>7.0f} {r['train_eval_top1']:>10.4f}  {_curve(r)}")
    if rows:
        best = max(rows, key=lambda r: r["test_top1"])
        short = [r["family"] for r in rows if r["test_top1"] < GOAL]
        print(f"best: {best['family']} ({best['name']}) {best['test_top1']:.4f}; "
              f">= {GOAL:.0%}: {len(rows) - len(short)} of {len(rows)}"
              + (f"; below: {', '.join(short)}" if short else "")
              + f"; training {sum(r['train_s'] for r in rows) / 60:.0f} min in all")


def markdown_table(rows: list[dict]) -> str:
    """The table as ``docs/models.md`` shows it."""
    lines = ["| family | model (size) | epochs x images | test top-1 | train top-1 | params | MMACs | "
             "train img/s | infer ms/img | train s | validation top-1 per epoch |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = "" if r["size"] == "as published" else f" ({r['size']})"
        mark = "" if r["test_top1"] >= GOAL else " (below 91%)"
        lines.append(f"| {r['family']} | `{r['name']}`{size} | {r['epochs']} x {r['train_images']:,} | "
                     f"**{100 * r['test_top1']:.2f}**{mark} | {100 * r['train_eval_top1']:.1f} | "
                     f"{r['params'] / 1e6:.2f} M | {r['macs'] / 1e6:.1f} | {r['train_img_s']:.0f} | "
                     f"{r['infer_ms']:.2f} | {r['train_s']:.0f} | {_curve(r)} |")
    return "\n".join(lines)


def plot(rows: list[dict], images_dir: str) -> list[str]:
    """Test accuracy against MACs and against parameters (log x), one labelled point per family."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(images_dir, exist_ok=True)
    paths = []
    for key, label in (("macs", "multiply-adds per 1x28x28 image"), ("params", "parameters")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        placed: list[tuple[float, float]] = []
        for r in rows:
            x, y = r[key], 100 * r["test_top1"]
            ax.scatter(x, y, color="C0" if r["test_top1"] >= GOAL else "C3")
            near = sum(abs(math.log10(x / px)) < 0.15 and abs(y - py) < 1.0 for px, py in placed)
            placed.append((x, y))
            ax.annotate(r["family"], (x, y), textcoords="offset points", xytext=(4, 3 - 11 * near), fontsize=8)
        ax.axhline(100 * GOAL, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel(label + " (log scale)")
        ax.set_ylabel("Fashion-MNIST test top-1 (%)")
        ax.set_title(f"The zoo trained on Fashion-MNIST: accuracy against {key.replace('macs', 'MACs')}")
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        path = os.path.join(images_dir, f"zoo_accuracy_{key}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def train_zoo(members: list[Member], out: str, reuse: bool, limit_train: int | None = None,
              epochs: int | None = None, test_images: int | None = None,
              images_dir: str | None = None, device: str = "cpu") -> list[dict]:
    """Train (or, with ``reuse``, read) each member, print the table, write the plots."""
    os.makedirs(out, exist_ok=True)
    print(f"training: Fashion-MNIST, one recipe ({' '.join(RECIPE)}), epochs per member below; "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, device {device}")
    jobs = [(f"{m.family}: {m.name}", os.path.join(out, f"{m.name}.json"),
             partial(train_member, m, out, limit_train, epochs, test_images, device)) for m in members]
    rows = measured_rows(jobs, reuse, lambda r: f"test top-1 {r['test_top1']:.4f} after {r['train_s']:.0f} s")
    print()
    print_table(rows)
    print()
    print(markdown_table(rows))
    if images_dir:
        print("plots:", ", ".join(plot(rows, images_dir)))
    return rows

# ----------------------------------------------------------------------------- inference

def _time_interleaved(fns: dict[str, Callable[[], Tensor]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in turn within each round (so a change
    in the machine's load hits all of them alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_inference(batch: int, rounds: int, compile_: bool) -> None:
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    ours = create_model("resnet50", num_classes=1000, in_chans=3).eval()
    ref_state = reference.state_dict()        # same layers in the same order: same weights
    ours.load_state_dict(dict(zip(ours.state_dict().keys(), ref_state.values())))
    fused = fuse_bn(ours).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    runs: dict[str, Callable[[], Tensor]] = {
        "torchvision eager (reference)": lambda: reference(x),
        "vislab eager": lambda: ours(x),
        "vislab fused + CL": lambda: fused(x_cl),
    }
    notes = []
    if compile_:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True            # weights become constants: folded, prepacked
        compiled = torch.compile(fused)
        try:
            t0 = time.perf_counter()
            with torch.inference_mode():
                compiled(x_cl)
            notes.append(f"torch.compile took {time.perf_counter() - t0:.0f} s (once)")
            runs["vislab fused + CL + compile"] = lambda: compiled(x_cl)
        except Exception as e:                     # no C++ compiler, unsupported platform...
            notes.append(f"torch.compile unavailable here: {type(e).__name__}: {e}"[:200])
    with torch.inference_mode():
        ref_out = reference(x)
        for name, fn in runs.items():
            fn()                                     # warm-up (and checks the logits agree)
            err = (fn() - ref_out).abs().max().item()
            if err > 1e-3 * ref_out.abs().max().item():
                raise RuntimeError(f"{name} disagrees with torchvision by {err:.3g}")
        seconds = _time_interleaved(runs, rounds)
    ref = seconds["torchvision eager (reference)"]
    print(f"\ninference: ResNet-50, batch {batch}x3x224x224 fp32, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, median of {rounds} interleaved rounds")
    print(f"{'variant':32s} {'ms/batch':>9s} {'img/s':>7s} {'speed-up':>8s}")
    for name, sec in seconds.items():
        print(f"{name:32s} {sec * 1e3:>9.1f} {batch / sec:>7.1f} {ref / sec:>7.2f}x")
    for note in notes:
        print(note)
    best = min((k for k in seconds if k.startswith("vislab")), key=seconds.get)
    print(f"best vislab variant: {best}, {ref / seconds[best]:.2f}x torchvision's eager ResNet-50")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run (seconds per model, not minutes)")
    p.add_argument("--out", default="runs/bench_zoo", help="per-model JSON results and run directories")
    p.add_argument("--reuse", action="store_true", help="keep the members already measured in --out")
    p.add_argument("--models", default=None,
                   help="comma-separated names or families to train (default: the whole zoo)")
    p.add_argument("--images-dir", default="docs/images", help="where the two plots go ('' for none)")
    p.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply every member's epochs (does more budget help?); results go to "
                        "OUT_xSCALE and no plots are written")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (bf16 autocast) for a longer budget")
    p.add_argument("--epochs", type=int, default=None,
                   help="every member this many epochs on all 59,000 training images (a GPU's budget); "
                        "results go to OUT_eEPOCHS")
    p.add_argument("--batch", type=int, default=16, help="inference batch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-inference", action="store_true")
    args = p.parse_args(argv)
    members = ZOO
    if args.models:
        wanted = {w.strip().lower() for w in args.models.split(",")}
        members = [m for m in ZOO if m.name.lower() in wanted or m.family.lower() in wanted]
        unknown = wanted - {m.name.lower() for m in members} - {m.family.lower() for m in members}
        if unknown:
            p.error(f"--models: not in the zoo: {', '.join(sorted(unknown))}; "
                    f"choose among {', '.join(m.name for m in ZOO)}")
    if args.budget_scale != 1:
        members = [replace(m, epochs=max(1, round(m.epochs * args.budget_scale))) for m in members]
        args.out, args.images_dir = f"{args.out}_x{args.budget_scale:g}", ""
    if args.epochs:
        members = [replace(m, epochs=args.epochs, train_images=None) for m in members]
        args.out, args.images_dir = f"{args.out}_e{args.epochs}", ""
    print(f"sgemm: {measured_sgemm_gflops(best_of=5):.0f} GFLOP/s fp32 (2048x2048, "
          f"{torch.get_num_threads()} threads)")
    if args.quick:
        args.batch, args.rounds, args.no_compile = 2, 2, True
        if args.out == p.get_default("out"):
            args.out = "runs/bench_zoo_quick"
    if not args.skip_train:
        train_zoo(members, args.out, args.reuse,
                  **(dict(limit_train=1512, epochs=1, test_images=500) if args.quick else {}),
                  images_dir=None if args.quick else (args.images_dir or None), device=args.device)
    if not args.skip_inference:
        bench_inference(args.batch, args.rounds, compile_=not args.no_compile)


if __name__ == "__main__":
    main()
