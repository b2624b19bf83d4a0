"""End to end through the CLI on tiny data: train, evaluate, predict, resume, cross-validate."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from vislab.engine.checkpoint import load_checkpoint

TINY = ["--set", "data.name=digits", "--set", "model.kwargs={widths: [8, 16, 16]}",
        "--set", "train.epochs=2", "--set", "train.batch_size=64", "--no-progress"]


def test_train_evaluate_predict(run_cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli("train", "--run-dir", run, *TINY)
    assert code == 0, err
    for f in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt",
              "plots/loss.png", "plots/accuracy.png", "model.safetensors"):
        assert (run / f).exists(), f
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(run / "tb"))
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["epoch"] for r in rows if r.get("epoch_end")] == [0, 1]

    code, out, err = run_cli("evaluate", run)
    assert code == 0, err
    rep = json.load(open(run / "eval.json"))
    assert set(rep) >= {"top1", "top5", "per_class", "confusion"}
    assert 0 <= rep["top1"] <= rep["top5"] <= 1 and rep["num_samples"] == 360
    assert f"{rep['top1'] * 100:.2f}%" in out
    assert sum(map(sum, rep["confusion"])) == 360
    code, _, _ = run_cli("evaluate", run, "--tta")
    assert code == 0 and json.load(open(run / "eval.json"))["tta"] is True

    # predict: an RGB image of another size is converted like the training data
    from vislab.data.datasets import load_split
    test = load_split("digits", "test")
    img = np.repeat(test.images[0, 0][:, :, None], 3, 2)
    Image.fromarray(img).resize((32, 32), Image.NEAREST).save(tmp_path / "digit.png")
    code, out, err = run_cli("predict", run, tmp_path / "digit.png", "--topk", "3")
    assert code == 0, err
    path, shown = out.strip().split("\t")
    assert path.endswith("digit.png") and len(shown.split()) == 6
    names, probs = shown.split()[0::2], [float(v) for v in shown.split()[1::2]]
    assert set(names) <= set(test.classes) and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-3


def test_best_checkpoint_and_early_stop(run_cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli("train", "--run-dir", run, *TINY, "--set", "train.epochs=6",
                             "--set", "optim.lr=1e-9", "--set", "sched.name=none",
                             "--set", "train.early_stop_patience=1", "--set", "train.monitor=val_loss")
    assert code == 0, err
    assert "early stop" in out
    last = load_checkpoint(str(run / "checkpoints" / "last.pt"))
    assert last["epoch"] < 6


def test_ema_and_refusals(run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--run-dir", run, *TINY, "--set", "train.ema_decay=0.9")
    assert code == 0, err
    assert "EMAHook" in load_checkpoint(str(run / "checkpoints" / "last.pt"))["hooks"]
    # a second run into the same folder is refused unless --resume / --fresh
    code, _, err = run_cli("train", "--run-dir", run, *TINY)
    assert code == 2 and "already holds a run" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli("train", "--run-dir", run, *TINY, "--fresh")
    assert code == 0 and "previous run moved to" in out
    assert any(p.startswith("run.prev-") for p in os.listdir(tmp_path))


def test_nonfinite_loss_keeps_last_checkpoint(run_cli, tmp_path):
    run = tmp_path / "run"
    # the rate jumps by 1e12 after the first epoch: epoch 2 diverges
    code, _, err = run_cli("train", "--run-dir", run, *TINY, "--set", "train.epochs=3", "--set", "sched.name=step",
                           "--set", "sched.step_epochs=1", "--set", "sched.gamma=1e12")
    assert code == 2 and "non-finite" in err and "last checkpoint is intact" in err
    assert len(err.strip().splitlines()) == 1
    assert load_checkpoint(str(run / "checkpoints" / "last.pt"))["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in load_checkpoint(str(run / "checkpoints" / "last.pt"))["model"].values()
               if v.is_floating_point())


def test_resume_refuses_changed_settings(run_cli, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--run-dir", run, *TINY, "--set", "train.epochs=1")[0] == 0
    for change in ("optim.lr=0.5", "train.epochs=4"):
        code, _, err = run_cli("train", "--run-dir", run, "--resume", "--set", change)
        assert code == 2 and "only the device may change" in err and change.split("=")[0] in err
    code, out, err = run_cli("train", "--run-dir", run, "--resume", "--set", "data.name=digits", "--no-progress")
    assert code == 0, err


def test_run_dir_in_use_is_refused(tmp_path):
    from vislab.errors import UserError
    from vislab.tasks.rundir import RunLock
    lock = RunLock(str(tmp_path))
    with pytest.raises(UserError, match="in use"):
        RunLock(str(tmp_path))
    lock.release()
    RunLock(str(tmp_path)).release()


def test_cross_validation(run_cli, tmp_path):
    code, out, err = run_cli("train", "--folds", "3", "--run-dir", tmp_path / "cv", *TINY,
                             "--set", "train.epochs=1")
    assert code == 0, err
    cv = json.load(open(tmp_path / "cv" / "cv.json"))
    assert len(cv["scores"]) == 3
    assert cv["mean"] == pytest.approx(np.mean(cv["scores"])) and cv["std"] == pytest.approx(np.std(cv["scores"], ddof=1))
    assert f"{cv['mean']:.4f} ± {cv['std']:.4f}" in out


def _train_cmd(run_dir, *extra, epochs=3):
    return [sys.executable, "-m", "vislab", "train", "--run-dir", str(run_dir), "--deterministic",
            "--set", "data.limit_train=9600", "--set", "model.kwargs={widths: [8, 16, 16]}",
            "--set", f"train.epochs={epochs}", "--set", "train.batch_size=32", "--set", "train.ema_decay=0.9",
            "--set", "data.augment.erase=0.5", "--set", "data.augment.mixup=0.2",
            "--no-progress", *extra]


def _step_rows(run_dir) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in open(path):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:     # a line being written
            pass
    return [r for r in rows if not r.get("epoch_end")]


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    """Kill training mid-epoch, after a checkpoint; the resumed run starts at the checkpoint's
    epoch and step (it runs only the epochs left) and ends bit-identical to an uninterrupted run."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref), check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 180
    ckpt_step = None
    # kill as soon as the log shows a step past the first checkpoint: mid-way through epoch 2
    while time.time() < deadline and proc.poll() is None:
        if ckpt_step is None and last.exists():
            ckpt_step = load_checkpoint(str(last))["step"]
        if ckpt_step is not None and any(r["step"] > ckpt_step for r in _step_rows(run)):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_checkpoint(str(last))
    assert ckpt["epoch"] == 1 and ckpt["step"] == ckpt_step, "the kill must land after the first checkpoint, mid-epoch 2"
    assert max(r["step"] for r in _step_rows(run)) > ckpt["step"]

    res = subprocess.run(_train_cmd(run, "--resume"), check=True, env=env, capture_output=True, text=True)
    assert f"at epoch 2, step {ckpt['step']}" in res.stdout
    assert "epoch 1/3" not in res.stdout and "epoch 2/3" in res.stdout and "epoch 3/3" in res.stdout

    a = load_checkpoint(str(ref / "checkpoints" / "last.pt"))
    b = load_checkpoint(str(run / "checkpoints" / "last.pt"))
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["hooks"]["EMAHook"]:
        assert torch.equal(a["hooks"]["EMAHook"][k], b["hooks"]["EMAHook"][k]), k


def test_fresh_refuses_a_run_dir_in_use(tmp_path):
    """`--fresh` takes the lock before moving anything: a folder another `vislab train` is
    writing is refused, not moved aside under it."""
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(run, epochs=50), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "config.yaml").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None and (run / "config.yaml").exists()
        res = subprocess.run(_train_cmd(run, "--fresh"), capture_output=True, text=True)
        assert res.returncode == 2 and "in use by another" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert sorted(os.listdir(tmp_path)) == ["run"], "the run in use was moved"
        assert proc.poll() is None, "the running training was disturbed"
    finally:
        proc.kill()
        proc.wait()


def test_run_records_every_model_default(run_cli, tmp_path, monkeypatch):
    """A run still loads after a constructor default changes: config.yaml holds them all."""
    import yaml

    from vislab.models import simple
    from vislab.tasks import load_run
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--run-dir", run, "--set", "data.name=digits", "--set", "train.epochs=1",
                           "--no-progress")
    assert code == 0, err
    kwargs = yaml.safe_load(open(run / "config.yaml"))["model"]["kwargs"]
    assert kwargs["widths"] == list(simple.SmallCNN.__init__.__defaults__[2]) and "drop" in kwargs
    model = load_run(str(run), "cpu").model
    monkeypatch.setattr(simple.small_cnn, "__defaults__", (10, 1, (8, 8, 8), 0.5))
    again = load_run(str(run), "cpu").model
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(x), again(x))
