"""A tiny trained run for the explanation and report tests: the default recipe's small CNN,
narrowed, on scikit-learn's 8x8 digits (trains in a few seconds)."""

from vislab.config import load_config
from vislab.tasks.runner import evaluate, train

TINY = ["data.name=digits", "model.kwargs={widths: [8, 16, 16]}", "train.epochs=3",
        "train.batch_size=64", "device=cpu"]


def train_tiny(run_dir: str, evaluated: bool = True) -> str:
    train(load_config(None, TINY), run_dir, progress=False, log=lambda *a: None)
    if evaluated:
        evaluate(run_dir, device="cpu")
    return run_dir
