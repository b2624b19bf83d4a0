"""Training throughput: vislab's tensor path against an idiomatic torchvision pipeline.

Both train the same model (the default recipe's) with the same augmentation (random crop with
2-pixel padding, horizontal flip), batch size, optimizer and number of steps, in this process:
  vislab      : data set as a normalised tensor, batched augmentation, vislab's Trainer step
  torchvision : datasets.FashionMNIST + transforms.v2 + DataLoader (num_workers as given)
Prints images/s of both, the ratio, and the fraction of this machine's fp32 matmul peak that
vislab's training reaches (training FLOPs counted by torch.utils.flop_counter).

    python -m benchmarks.bench_train [--steps 150] [--workers 0 2] [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import tempfile
import time

import torch

from vislab.config import Config
from vislab.data.datasets import load_split, locate
from vislab.data.loader import TensorLoader, channel_stats, to_tensor
from vislab.engine.losses import build_loss
from vislab.engine.optim import build_optimizer
from vislab.engine.trainer import Trainer
from vislab.models import create_model


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def train_step_flops(model: torch.nn.Module, batch: int, in_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward+backward step, as torch's FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.randn(batch, *in_shape)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def _model(cfg: Config) -> torch.nn.Module:
    return create_model(cfg.model.name, 10, 1)


def bench_vislab(cfg: Config, steps: int, channels_last: bool) -> float:
    data = load_split("fashion_mnist", "train")
    mean, std = channel_stats(data.images)
    x = to_tensor(data.images, mean, std, channels_last=channels_last)
    y = torch.from_numpy(data.labels)
    gen = torch.Generator().manual_seed(0)
    loader = TensorLoader(x, y, cfg.train.batch_size, shuffle=True, drop_last=True,
                          augment=cfg.data.augment, gen=gen, num_classes=10, fill=-mean[0] / std[0])
    model = _model(cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainer = Trainer(model, build_optimizer(model, cfg.optim), build_loss("cross_entropy", 0.1), loader, 1)
    model.train()
    trainer.reset_running()
    it = iter(loader)
    for _ in range(5):                           # warm-up
        trainer.train_step(*next(it))
    t = time.perf_counter()
    for _ in range(steps):
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(loader)
            xb, yb = next(it)
        trainer.train_step(xb, yb)
    return steps * cfg.train.batch_size / (time.perf_counter() - t)


def bench_torchvision(cfg: Config, steps: int, workers: int, root: str) -> float:
    from torchvision import datasets
    from torchvision.transforms import v2
    data = load_split("fashion_mnist", "train")
    mean, std = channel_stats(data.images)
    tf = v2.Compose([v2.ToImage(), v2.RandomCrop(28, padding=2), v2.RandomHorizontalFlip(),
                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    ds = datasets.FashionMNIST(root, train=True, transform=tf, download=False)
    dl = torch.utils.data.DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                                     num_workers=workers, persistent_workers=workers > 0)
    model = _model(cfg)
    opt = build_optimizer(model, cfg.optim)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    it = iter(dl)

    def step():
        nonlocal it
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(dl)
            xb, yb = next(it)
        loss = crit(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(5):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * cfg.train.batch_size / (time.perf_counter() - t)


def _torchvision_root() -> str:
    """torchvision wants the decompressed files under ROOT/FashionMNIST/raw/."""
    root = tempfile.mkdtemp(prefix="vislab-bench-")
    raw = os.path.join(root, "FashionMNIST", "raw")
    os.makedirs(raw)
    src = locate("fashion_mnist")
    for f in os.listdir(src):
        if f.endswith(".gz"):
            with gzip.open(os.path.join(src, f)) as fi, open(os.path.join(raw, f[:-3]), "wb") as fo:
                shutil.copyfileobj(fi, fo)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    steps = 10 if args.quick else args.steps
    cfg = Config()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {cfg.model.name}, "
          f"batch {cfg.train.batch_size}, {steps} steps")
    peak = matmul_peak_gflops()
    flops = train_step_flops(_model(cfg), cfg.train.batch_size, (1, 28, 28)) / cfg.train.batch_size
    root = _torchvision_root()
    try:
        ours = {cl: bench_vislab(cfg, steps, cl) for cl in (False, True)}
        best_cl = max(ours, key=ours.get)
        ref = {w: bench_torchvision(cfg, steps, w, root) for w in args.workers}
    finally:
        shutil.rmtree(root)
    best_ref = max(ref.values())
    print(f"{'pipeline':44s} {'images/s':>10s}")
    for cl, v in ours.items():
        print(f"{'vislab tensors + batched aug' + (' (channels_last)' if cl else ''):44s} {v:10.0f}")
    for w, v in ref.items():
        print(f"{f'torchvision Dataset+v2+DataLoader workers={w}':44s} {v:10.0f}")
    print(f"ratio vislab / best torchvision: {ours[best_cl] / best_ref:.2f}x")
    print(f"fp32 matmul peak {peak:.0f} GFLOP/s; training {flops / 1e6:.1f} MFLOP/image "
          f"(fwd+bwd) -> {ours[best_cl] * flops / 1e9:.1f} GFLOP/s = {ours[best_cl] * flops / 1e9 / peak:.0%} of peak")


if __name__ == "__main__":
    main()
