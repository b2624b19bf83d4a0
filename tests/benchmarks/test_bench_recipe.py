"""bench_recipe's test probe against `vislab evaluate` on the same run, and the shipped `best` recipe."""

import pytest

import benchmarks.bench_recipe as bench
from vislab.config import load_config
from vislab.data.datasets import load_split
from vislab.tasks import runner

TINY = ["data.name=digits", "data.limit_train=300", "data.val_size=60", "train.epochs=1", "train.batch_size=32"]


def test_probe_and_its_tta_equal_vislab_evaluate_on_the_recipe_best(tmp_path):
    """One epoch, so best.pt (what `evaluate` reads) is the model the probe saw after training:
    the probe's test accuracy and its flip-TTA accuracy are `evaluate`'s and `evaluate --tta`'s."""
    cfg = load_config("best", TINY)
    assert cfg.model.name == "wrn_16_2" and cfg.data.augment.erase > 0 and cfg.data.augment.crop_pad == 2
    test = load_split("digits", "test")
    probes = []

    def hooks(info, device):
        probes.append(bench.TestProbe(info, device, test.images, test.labels, tta=True))
        return probes[-1:]
    runner.train(cfg, str(tmp_path / "run"), progress=False, log=lambda s: None, extra_hooks=hooks)
    (epoch, seconds, acc), = probes[0].rows
    assert epoch == 1 and seconds > 0
    assert acc == pytest.approx(runner.evaluate(str(tmp_path / "run"))["top1"], abs=1e-6)
    assert probes[0].tta == pytest.approx(runner.evaluate(str(tmp_path / "run"), tta=True)["top1"], abs=1e-6)


def test_time_to_is_the_first_epoch_at_or_past_the_level():
    rows = [(1, 10.0, 0.90), (2, 20.0, 0.93), (3, 30.0, 0.92), (4, 40.0, 0.95)]
    assert bench.time_to(rows, 0.93) == 20.0 and bench.time_to(rows, 0.95) == 40.0 and bench.time_to(rows, 0.96) is None
