"""The early-stop hook's direction of improvement and its ``last`` monitor."""

from types import SimpleNamespace

import pytest

from vislab.engine.hooks import EarlyStopHook
from vislab.errors import UserError


def _epochs(hook: EarlyStopHook, values: list[float], key: str) -> list[bool]:
    t = SimpleNamespace(epoch=0, improved=False, stop=False, epoch_metrics={}, log=lambda s: None)
    out = []
    for e, v in enumerate(values):
        t.epoch, t.epoch_metrics = e, {key: v}
        hook.after_epoch(t)
        out.append(t.improved)
    return out


@pytest.mark.parametrize("key", ["val_loss", "val_recon_error", "val_fd"])
def test_lower_is_better_for_losses_errors_and_distances(key):
    assert _epochs(EarlyStopHook(key), [3.0, 2.0, 2.5, 1.0], key) == [True, True, False, True]


def test_higher_is_better_otherwise():
    assert _epochs(EarlyStopHook("val_top1"), [0.5, 0.4, 0.6], "val_top1") == [True, False, True]


def test_last_keeps_every_epoch():
    hook = EarlyStopHook("last", patience=1)
    assert _epochs(hook, [1.0, 2.0, 0.5], "val_d_real") == [True, True, True]
    assert hook.best_epoch == 2


def test_an_unmeasured_monitor_names_the_fix():
    with pytest.raises(UserError, match="train.monitor"):
        _epochs(EarlyStopHook("val_miou"), [1.0], "val_loss")
