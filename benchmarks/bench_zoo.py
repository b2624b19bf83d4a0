"""The zoo side by side, and vislab's fastest CPU inference against torchvision's eager ResNet-50.

    .venv/bin/python -m benchmarks.bench_zoo            # 2,000 training images x 2 epochs each
    .venv/bin/python -m benchmarks.bench_zoo --quick    # smoke run: 128 images, 1 epoch, no compile

Training: LeNet-5, CIFAR ResNet-20, MobileNet v2 and ViT-Ti (small-input stems, 1x28x28) train
with one recipe (AdamW, one-cycle) on the same Fashion-MNIST images for the same number of
epochs through ``vislab.engine``; each row prints test accuracy (on the first ``--test`` test
images), parameters and MACs (``vislab.analysis.summarize``) and training images/s.

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
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import Tensor

from vislab.analysis import fuse_bn, summarize
from vislab.config import Config, apply_override
from vislab.models import create_model

ZOO = [("lenet5", {"small_input": True}),
       ("resnet20", {}),
       ("mobilenet_v2", {"small_input": True}),
       ("vit_ti_16", {"small_input": True, "img_size": 28})]


# ------------------------------------------------------------------------------ training

def train_zoo(train_images: int, epochs: int, test_images: int, batch_size: int,
              val_images: int) -> None:
    from vislab.data.datasets import load_split
    from vislab.tasks import load_run
    from vislab.tasks.runner import train

    test = load_split("fashion_mnist", "test")
    print(f"training: Fashion-MNIST, {train_images} images x {epochs} epochs, batch {batch_size}, "
          f"AdamW 2e-3 one-cycle; test on the first {test_images} test images; "
          f"{torch.get_num_threads()} threads; train img/s includes validating {val_images} "
          "images per epoch")
    print(f"{'model':14s} {'params':>10s} {'MMACs':>8s} {'test top1':>9s} {'train img/s':>11s} "
          f"{'test img/s':>10s}")
    for name, kwargs in ZOO:
        cfg = Config()
        for item in (f"model.name={name}", f"model.kwargs={_yaml(kwargs)}",
                     f"data.limit_train={train_images + val_images}",
                     f"data.val_size={val_images}",
                     f"train.epochs={epochs}", f"train.batch_size={batch_size}",
                     "optim.name=adamw", "optim.lr=0.002", "optim.weight_decay=0.05",
                     "sched.name=onecycle", "device=cpu"):
            apply_override(cfg, item)
        with tempfile.TemporaryDirectory() as run_dir:
            result = train(cfg, run_dir, fresh=True, progress=False, log=lambda *a: None)
            run = load_run(run_dir, "cpu")
        model = run.model
        x = run.norm.from_uint8(test.images[:test_images])
        y = torch.from_numpy(test.labels[:test_images])
        t0 = time.perf_counter()
        with torch.inference_mode():
            pred = torch.cat([model(b).argmax(1) for b in x.split(256)])
        test_ips = len(y) / (time.perf_counter() - t0)
        s = summarize(model, tuple(x.shape[1:]))
        print(f"{name:14s} {s.params:>10,} {s.macs / 1e6:>8.2f} {(pred == y).float().mean():>9.4f} "
              f"{train_images * epochs / result.train_time_s:>11.1f} {test_ips:>10.1f}")


def _yaml(d: dict) -> str:
    return "{" + ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}"
                           for k, v in d.items()) + "}"


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
    p.add_argument("--quick", action="store_true", help="smoke run (seconds, not minutes)")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16, help="inference batch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-inference", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.train_images, args.epochs, args.test_images, args.val_images = 128, 1, 128, 64
        args.batch, args.rounds, args.no_compile = 2, 2, True
    if not args.skip_train:
        train_zoo(args.train_images, args.epochs, args.test_images, 64, args.val_images)
    if not args.skip_inference:
        bench_inference(args.batch, args.rounds, compile_=not args.no_compile)


if __name__ == "__main__":
    main()
