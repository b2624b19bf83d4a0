import math

import pytest
import torch
from torch import nn

from vislab.config import OptimConfig, ScheduleConfig
from vislab.engine.optim import build_optimizer, build_scheduler, param_groups
from vislab.models import create_model


def test_no_decay_on_norm_and_bias():
    m = create_model("small_cnn", 10, 1)
    groups = param_groups(m, 5e-4, decay_norm_and_bias=False)
    decay_ids = {id(p) for p in groups[0]["params"]}
    for name, p in m.named_parameters():
        is_weight = name.endswith("weight") and p.ndim > 1
        assert (id(p) in decay_ids) == is_weight, name
    assert groups[1]["weight_decay"] == 0.0
    assert len(param_groups(m, 5e-4, True)) == 1


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop),
                                      ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizers(name, cls):
    m = nn.Linear(3, 2)
    opt = build_optimizer(m, OptimConfig(name=name, lr=0.01))
    assert isinstance(opt, cls)
    if name == "sgd":
        assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


def _lrs(sched_cfg, steps_per_epoch=10, epochs=5, lr=1.0):
    m = nn.Linear(2, 2)
    opt = build_optimizer(m, OptimConfig(name="sgd", lr=lr, weight_decay=0))
    sched = build_scheduler(opt, sched_cfg, steps_per_epoch, epochs)
    out = []
    for _ in range(steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_warmup_by_hand():
    lrs = _lrs(ScheduleConfig(name="cosine", warmup_epochs=1))
    warm, total = 10, 50
    for t, lr in enumerate(lrs):
        if t < warm:
            want = 1 / warm + (1 - 1 / warm) * t / warm      # linear ramp from lr/warm
        else:
            want = 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
        assert lr == pytest.approx(want, abs=1e-6), t


def test_step_schedule():
    lrs = _lrs(ScheduleConfig(name="step", step_epochs=2, gamma=0.1))
    assert lrs[19] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1) and lrs[40] == pytest.approx(0.01)


def test_onecycle_peaks_then_falls():
    lrs = _lrs(ScheduleConfig(name="onecycle", pct_start=0.25))
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(1.0, rel=2e-2) and 10 <= peak <= 14
    assert lrs[0] == pytest.approx(1 / 25) and lrs[-1] < 1e-3


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 8])
def test_onecycle_on_a_handful_of_steps(total):
    # A tiny run (one epoch of a few batches) once divided by zero inside OneCycleLR when the
    # warm-up phase had no step of its own (pct_start * total == 1).  Below 3 steps the rate is
    # the peak; from 3 it rises then falls, never above the peak nor below zero.
    m = nn.Linear(2, 2)
    opt = build_optimizer(m, OptimConfig(name="sgd", lr=1.0, weight_decay=0))
    sched = build_scheduler(opt, ScheduleConfig(name="onecycle", pct_start=0.25), total, 1)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    assert (sched is None) == (total < 3)
    assert all(0 <= lr <= 1.0 + 1e-9 for lr in lrs)
    if total >= 3:
        assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)
