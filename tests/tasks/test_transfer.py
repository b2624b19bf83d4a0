"""Transfer learning on tiny runs (the 8x8 digits): a backbone trained on digits 0-4 starts runs on
other digits; the checks compare tensors with the source checkpoint, rates with torch's own
schedulers, and subsets with selections written out in numpy."""

import copy
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from vislab.config import OptimConfig, ScheduleConfig, load_config
from vislab.data.datasets import load_split
from vislab.data.info import DataInfo
from vislab.data.loader import train_val_split
from vislab.engine.checkpoint import load_checkpoint
from vislab.engine.hooks import Hook
from vislab.engine.optim import build_optimizer, build_scheduler
from vislab.errors import UserError
from vislab.models import create_model
from vislab.tasks import get_task
from vislab.tasks.runner import evaluate, train
from vislab.tasks.transfer import apply_transfer, freeze_backbone, head_parameter_names

BASE = ["data.name=digits", "model.kwargs={widths: [8, 16, 16]}", "train.batch_size=64"]
CPU = torch.device("cpu")


def _cfg(*overrides: str):
    return load_config(None, [*BASE, *overrides])


def _backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("head.")}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """A small CNN trained on digits 0-4 (its head has 5 outputs)."""
    run = str(tmp_path_factory.mktemp("transfer") / "source")
    train(_cfg("data.classes=[0, 1, 2, 3, 4]", "train.epochs=2"), run, progress=False, log=lambda s: None)
    return run


def _source_state(run: str) -> dict:
    return load_checkpoint(os.path.join(run, "checkpoints", "best.pt"))


def test_init_from_loads_exactly_the_backbone_and_a_new_head(source):
    cfg = _cfg("data.classes=[5, 6, 7]", f"model.init_from={source}")
    task = get_task("classification")
    info = task.build_data(cfg, CPU).info
    model = task.build_model(cfg, info)
    fresh_head = copy.deepcopy(model.head.state_dict())
    lines: list[str] = []
    apply_transfer(model, cfg, lines.append)

    src = _source_state(source)
    state = model.state_dict()
    backbone = _backbone(state)
    assert backbone.keys() == _backbone(src["model"]).keys() and len(backbone) == len(state) - 2
    for k, v in backbone.items():                      # weights and BatchNorm statistics alike
        assert torch.equal(v, src["model"][k]), k
    assert head_parameter_names(model) == ["head.weight", "head.bias"]
    assert model.head.weight.shape == (3, 16) and src["model"]["head.weight"].shape == (5, 16)
    for k, v in model.head.state_dict().items():       # the head keeps its fresh initialisation
        assert torch.equal(v, fresh_head[k]), k
    assert lines == [f"init from {source}: {len(backbone)} tensors loaded, head new (3 classes)"]
    # the inputs are normalised as the backbone's were, not with the new classes' statistics
    assert info.norm == DataInfo.from_dict(src["data"]).norm


class _Watch(Hook):
    """The head and the optimised parameters at the start of training; stops after ``stop_after``
    epochs (an interruption, to resume from)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after, self.head, self.optimised = stop_after, None, None

    def before_train(self, t) -> None:
        self.head = copy.deepcopy(t.model.head.state_dict())
        self.optimised = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
        self.head_ids = {id(p) for p in t.model.head.parameters()}

    def after_epoch(self, t) -> None:
        if self.stop_after is not None and t.epoch + 1 >= self.stop_after:
            raise KeyboardInterrupt


def test_frozen_backbone_and_its_bn_statistics_do_not_move_through_training_and_resume(source, tmp_path):
    run = str(tmp_path / "probe")
    cfg = _cfg("data.classes=[5, 6, 7, 8, 9]", "data.per_class=20", "train.batch_size=10", "train.epochs=2",
               f"model.init_from={source}", "train.freeze=backbone", "train.ema_decay=0.9")
    first = _Watch(stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, progress=False, log=lambda s: None, extra_hooks=lambda info, dev: [first])
    assert first.optimised == first.head_ids               # the optimizer sees the head only
    train(cfg, run, resume=True, progress=False, log=lambda s: None, extra_hooks=lambda info, dev: [_Watch()])

    src = _source_state(source)["model"]
    for name in ("last.pt", "best.pt"):                    # the model, and its EMA
        state = load_checkpoint(os.path.join(run, "checkpoints", name))["model"]
        for k, v in _backbone(state).items():              # running_mean/var and num_batches_tracked too
            assert torch.equal(v, src[k]), (name, k)
        assert not torch.equal(state["head.weight"], first.head["weight"])
    last = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))
    assert last["epoch"] == 2

    rep = evaluate(run, device="cpu")                      # the test set has the run's classes only
    test = load_split("digits", "test")
    assert rep["num_samples"] == int(np.isin(test.labels, [5, 6, 7, 8, 9]).sum())
    assert list(rep["per_class"]) == ["5", "6", "7", "8", "9"] and np.asarray(rep["confusion"]).shape == (5, 5)
    with open(os.path.join(run, "eval.json")) as f:
        assert json.load(f)["top1"] == rep["top1"]


def test_freeze_keeps_the_backbone_in_eval_mode_after_train_and_in_copies():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, 1, widths=(4, 8, 8))
    model.train()
    x = torch.randn(16, 1, 12, 12)
    model(x)                                  # give the statistics something other than their init
    freeze_backbone(model)
    for m in (model, copy.deepcopy(model)):   # the EMA copies the model with deepcopy
        before = copy.deepcopy(m.state_dict())
        m.train()
        out = m(x)
        assert all(not b.training for b in m.modules() if isinstance(b, nn.BatchNorm2d))
        assert m.training and m.head.training
        for k, v in _backbone(m.state_dict()).items():
            assert torch.equal(v, before[k]), k
        out.sum().backward()
        assert all((p.grad is not None) == n.startswith("head.") for n, p in m.named_parameters())
        # the features are those of eval mode (running statistics), as in evaluation
        feats = m.forward_features(x)
        assert torch.equal(feats, m.eval().forward_features(x))
    # the oracle: an unfrozen twin in train mode moves its statistics on the same batch
    twin = create_model("small_cnn", 3, 1, widths=(4, 8, 8))
    twin.load_state_dict(before)
    twin.train()(x)
    moved = [k for k, v in twin.state_dict().items() if "running_" in k and not torch.equal(v, before[k])]
    assert len(moved) == 2 * sum(isinstance(b, nn.BatchNorm2d) for b in twin.modules())


def _group_names(model: nn.Module, opt: torch.optim.Optimizer) -> list[tuple[set, float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [({names[id(p)] for p in g["params"]}, g["lr"], g["weight_decay"]) for g in opt.param_groups]


def test_backbone_lr_scale_gives_four_groups_with_their_own_rates():
    model = create_model("small_cnn", 10, 1, widths=(4, 8, 8))
    opt = build_optimizer(model, OptimConfig(lr=0.2, weight_decay=5e-4, backbone_lr_scale=0.1))
    params = dict(model.named_parameters())
    head = set(head_parameter_names(model))
    backbone = set(params) - head
    weights = {n for n, p in params.items() if p.ndim >= 2}
    assert _group_names(model, opt) == [
        (backbone & weights, pytest.approx(0.02), 5e-4), (backbone - weights, pytest.approx(0.02), 0.0),
        (head & weights, 0.2, 5e-4), (head - weights, 0.2, 0.0)]
    # scale 1: the two groups as before; a frozen backbone: the head's groups only
    assert [len(g["params"]) for g in build_optimizer(model, OptimConfig(lr=0.2)).param_groups] == \
        [len(weights), len(params) - len(weights)]
    freeze_backbone(model)
    assert _group_names(model, build_optimizer(model, OptimConfig(lr=0.2, backbone_lr_scale=0.1))) == [
        (head & weights, 0.2, 5e-4), (head - weights, 0.2, 0.0)]
    with pytest.raises(UserError, match="backbone_lr_scale=1"):
        build_optimizer(nn.Linear(3, 2), OptimConfig(backbone_lr_scale=0.1))


def _single_group_lrs(lr: float, sched: str, steps: int, **sched_kwargs) -> list[float]:
    """The oracle: the same schedule, or torch's cosine, on a one-group optimizer at ``lr``."""
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr, momentum=0.9, nesterov=True)
    if sched == "cosine":
        s = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * sched_kwargs["ratio"])
    else:
        s = build_scheduler(opt, ScheduleConfig(name=sched), steps, 1)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    return out


@pytest.mark.parametrize("sched", ["onecycle", "cosine"])
def test_each_group_follows_its_own_schedule(sched):
    steps, ratio = 40, 0.1
    model = create_model("small_cnn", 10, 1, widths=(4, 8, 8))
    opt = build_optimizer(model, OptimConfig(lr=0.2, backbone_lr_scale=0.1))
    s = build_scheduler(opt, ScheduleConfig(name=sched, min_lr_ratio=ratio), steps, 1)
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        s.step()
    seen = np.array(seen)                                   # (steps, 4 groups): backbone x2, head x2
    np.testing.assert_allclose(seen[:, 0] / seen[:, 2], 0.1, rtol=1e-9)
    np.testing.assert_allclose(seen[:, 0], _single_group_lrs(0.02, sched, steps, ratio=ratio), rtol=1e-6)
    np.testing.assert_allclose(seen[:, 2], _single_group_lrs(0.2, sched, steps, ratio=ratio), rtol=1e-6)


@pytest.mark.parametrize("per_class", [None, 3])
def test_classes_and_per_class_select_like_numpy(per_class):
    classes = [7, 2, 5]
    full = load_split("digits", "train")
    val_positions = np.arange(0, len(full.labels), 4)      # as cross_validate gives them: file positions
    cfg = _cfg(f"data.classes={classes}", f"data.per_class={per_class if per_class else 'null'}",
               "train.channels_last=false")
    data = get_task("classification").build_data(cfg, CPU, val_positions)

    kept = [i for i in range(len(full.labels)) if full.labels[i] in classes]
    val = [i for i in kept if i % 4 == 0]
    tr = [i for i in kept if i % 4 != 0]
    if per_class:
        tr = [i for i in tr if sum(full.labels[j] == full.labels[i] for j in tr if j <= i) <= per_class]
    relabel = {c: k for k, c in enumerate(classes)}

    def pixels(x):
        return np.round(data.info.norm.denormalize(x).numpy() * 255).astype(np.uint8)
    assert data.info.classes == ("7", "2", "5")
    np.testing.assert_array_equal(data.train_y.numpy(), [relabel[full.labels[i]] for i in tr])
    np.testing.assert_array_equal(data.val_y.numpy(), [relabel[full.labels[i]] for i in val])
    np.testing.assert_array_equal(pixels(data.train_x), full.images[tr])
    np.testing.assert_array_equal(pixels(data.val_x), full.images[val])
    np.testing.assert_allclose(data.info.norm.mean, [full.images[tr].mean() / 255], rtol=1e-6)


def test_per_class_takes_the_first_n_after_the_split_and_validation_is_disjoint():
    classes, n = [5, 6, 7, 8, 9], 4
    cfg = _cfg(f"data.classes={classes}", f"data.per_class={n}", "data.val_size=0.2", "train.channels_last=false")
    data = get_task("classification").build_data(cfg, CPU)
    full = load_split("digits", "train")
    kept = np.flatnonzero(np.isin(full.labels, classes))
    tr, va = train_val_split(len(kept), 0.2, cfg.seed)
    first = {c: [i for i in kept[tr] if full.labels[i] == c][:n] for c in classes}
    want = sorted(i for idx in first.values() for i in idx)

    def pixels(x):
        return np.round(data.info.norm.denormalize(x).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels(data.train_x), full.images[want])
    np.testing.assert_array_equal(pixels(data.val_x), full.images[kept[va]])
    assert np.bincount(data.train_y.numpy()).tolist() == [n] * 5 and len(data.val_y) == len(va)
    labelled = {img.tobytes() for img in full.images[want]}
    assert not labelled & {img.tobytes() for img in full.images[kept[va]]}
    with pytest.raises(UserError, match="data.per_class: 500 images per class asked"):
        get_task("classification").build_data(_cfg(f"data.classes={classes}", "data.per_class=500"), CPU)


TINY_CLI = ["--set", "data.name=digits", "--set", "model.kwargs={widths: [8, 16, 16]}", "--no-progress"]


def test_cli_refuses_a_source_that_cannot_transfer(run_cli, tmp_path, source):
    (tmp_path / "empty").mkdir()
    cases = [("/nope", [], "run directory /nope does not exist"),
             (str(tmp_path / "empty"), [], "not a run directory"),
             (source, ["--set", "model.name=linear"], "trained 'small_cnn', this run builds 'linear'"),
             (source, ["--set", "model.kwargs={widths: [8, 16, 32]}"], "does not fit this model (stages.2")]
    for k, (init, extra, message) in enumerate([*cases, ("null", ["--set", "data.classes=[3, 12]"], "data.classes")]):
        run = tmp_path / f"r{k}"
        code, _, err = run_cli("train", "--run-dir", run, *TINY_CLI, *extra, "--set", f"model.init_from={init}")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not run.exists()                            # refused before anything was written


def test_cross_validation_with_classes_and_few_labels(run_cli, tmp_path):
    code, out, err = run_cli("train", "--folds", "2", "--run-dir", tmp_path / "cv", *TINY_CLI,
                             "--set", "data.classes=[5, 6, 7, 8, 9]", "--set", "data.per_class=10",
                             "--set", "train.batch_size=10", "--set", "train.epochs=1")
    assert code == 0, err
    with open(tmp_path / "cv" / "cv.json") as f:
        assert len(json.load(f)["scores"]) == 2
    assert out.count("50 training images (10 per class)") == 2


def test_report_of_a_run_on_some_classes(source):
    """The report's explanations (retrieval, mistakes, t-SNE) read the test split restricted to
    the run's classes, labelled as in training."""
    from vislab.explain.run import RunContext
    from vislab.tasks import load_run
    from vislab.tasks.runner import report
    ctx = RunContext(load_run(source, "cpu"))
    test = load_split("digits", "test")
    keep = np.isin(test.labels, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(ctx.split("test").labels, test.labels[keep])
    assert os.path.exists(report(source, "cpu", log=lambda s: None))


def test_init_from_a_metric_learning_run(tmp_path):
    """A classifier starts from the backbone of a triplet-trained embedding network."""
    metric = str(tmp_path / "triplet")
    cfg = load_config("triplet", ["data.name=digits", "model.kwargs={widths: [8, 16, 16]}", "train.epochs=1",
                                  "metric.images_per_class=8", "data.val_size=100"])
    train(cfg, metric, progress=False, log=lambda s: None)
    src = {k[len("backbone."):]: v for k, v in _source_state(metric)["model"].items() if k.startswith("backbone.")}
    cfg = _cfg("data.classes=[5, 6, 7, 8, 9]", f"model.init_from={metric}")
    model = get_task("classification").build_model(cfg, get_task("classification").build_data(cfg, CPU).info)
    apply_transfer(model, cfg, log=lambda s: None)
    mine = _backbone(model.state_dict())
    assert set(mine) == set(src)
    for k, v in mine.items():
        assert torch.equal(v, src[k]), k
