"""Data-parallel training with ``vislab train --nproc 2`` (two local gloo processes through
torchrun's launcher): the same weights as one process at the same global batch, a killed run
resumed bit for bit, the step-function path (gradients averaged by hand) against one process,
other tasks, and the mistakes refused in one line.  The global-batch slicing is checked in
process."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from vislab.engine.distributed import ShardedLoader

# Adam at a small step: rounding differences (the mean of two half-batch means against the mean
# of the batch, ~1e-7) stay that small over the 66 steps instead of growing as at SGD's larger steps
MLP = ["quick", "--set", "model.name=mlp", "--set", "model.kwargs={drop: 0.0}", "--set", "optim.name=adam",
       "--set", "optim.lr=0.0003", "--set", "sched.name=none", "--set", "data.limit_train=2200", "--set", "data.val_size=200",
       "--set", "train.batch_size=100", "--set", "train.epochs=3", "--deterministic", "--no-progress"]


def vislab(*args, check=True, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "vislab", *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=300, **kw)
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


def weights(run) -> dict:
    return load_file(os.path.join(run, "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def epochs(run) -> list[dict]:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("epoch_end")]


def processes_with(arg: str) -> list[int]:
    """Process ids whose command line holds ``arg``."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if arg.encode() in f.read().split(b"\0"):
                    out.append(int(pid))
        except OSError:
            continue
    return out


# --- in process ---------------------------------------------------------------------------------

class Batches:
    def __init__(self, batches):
        self.batches, self.gen, self.batch_size = batches, torch.Generator(), 8

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def test_sharded_loader_splits_every_global_batch():
    x = torch.arange(20).float()
    batches = Batches([(x[:8], x[:8].long()), (x[8:16], x[8:16].long()), (x[16:], x[16:].long())])
    parts = [list(ShardedLoader(batches, r, 2)) for r in range(2)]
    assert [len(p) for p in parts] == [3, 3] and ShardedLoader(batches, 1, 2).batch_size == 4
    for i, (gx, gy) in enumerate(batches):
        assert torch.equal(torch.cat([parts[0][i][0], parts[1][i][0]]), gx)
        assert torch.equal(torch.cat([parts[0][i][1], parts[1][i][1]]), gy)
    assert len(parts[0][2][0]) == 2 and len(parts[1][2][0]) == 2      # the short last batch, evenly
    nested = Batches([((x[:8], x[:8] * 2), [{"i": i} for i in range(8)])])
    (a, b), targets = next(iter(ShardedLoader(nested, 1, 2)))
    assert torch.equal(a, x[4:8]) and torch.equal(b, x[4:8] * 2) and [t["i"] for t in targets] == [4, 5, 6, 7]


# --- two processes --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp_runs(tmp_path_factory):
    """The same 3 epochs of a model without BatchNorm, by 1 process and by 2 (global batch 100)."""
    root = tmp_path_factory.mktemp("ddp")
    one, two = root / "one", root / "two"
    vislab("train", *MLP, "--run-dir", one)
    out = vislab("train", *MLP, "--run-dir", two, "--nproc", "2").stdout
    return one, two, out


def test_two_processes_give_the_weights_of_one(mlp_runs):
    one, two, out = mlp_runs
    assert "2 processes (gloo): global batch 100, 50 per process" in out
    assert out.count("run directory:") == 1                            # process 0 speaks for both
    assert max_diff(weights(one), weights(two)) < 1e-5
    for a, b in zip(epochs(one), epochs(two), strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)   # the global batch's loss
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    state = torch.load(two / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2


def test_batchnorm_curves_agree(tmp_path):
    """small_cnn (BatchNorm, per-process statistics): the curves of 1 and 2 processes agree
    within a few percent: each process normalises its 50 images instead of the 100, and the
    running statistics evaluated are process 0's (measured here: training loss within 1% at
    every epoch, the last validation loss within 3%, accuracy within 0.02)."""
    args = ["quick", "--set", "data.limit_train=2200", "--set", "data.val_size=200", "--set", "train.batch_size=100",
            "--set", "optim.lr=0.05", "--set", "train.epochs=3", "--deterministic", "--no-progress"]
    vislab("train", *args, "--run-dir", tmp_path / "one")
    vislab("train", *args, "--run-dir", tmp_path / "two", "--nproc", "2")
    one, two = epochs(tmp_path / "one"), epochs(tmp_path / "two")
    for a, b in zip(one, two, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.03)
    assert two[-1]["val_loss"] == pytest.approx(one[-1]["val_loss"], rel=0.1)   # after 66 steps of statistics
    assert abs(two[-1]["val_top1"] - one[-1]["val_top1"]) < 0.05


def test_killed_run_resumes_bit_for_bit(mlp_runs, tmp_path):
    """SIGKILL one process after the first epoch's checkpoint; --resume --nproc 2 ends with the
    weights of the uninterrupted 2-process run (--deterministic)."""
    _, whole, _ = mlp_runs
    cut = tmp_path / "cut"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "vislab", "train", *MLP, "--run-dir", str(cut), "--nproc", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = cut / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert last.exists() and proc.poll() is None, "the run ended before its first checkpoint"
    workers = [p for p in processes_with(str(cut)) if p != proc.pid]    # the two processes, not the launcher
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert len(epochs(cut)) < len(epochs(whole))
    r = vislab("train", "--resume", "--run-dir", cut, "--nproc", "2")
    assert "resuming" in r.stdout
    assert max_diff(weights(whole), weights(cut)) == 0.0
    r = vislab("train", "--resume", "--run-dir", cut, check=False)
    assert r.returncode == 2 and "resume it with --nproc 2" in r.stderr


def test_step_function_path_averages_gradients(tmp_path):
    """The dense autoencoder trains through the generative task's step function, without the
    DistributedDataParallel wrapper: its gradients are averaged by hand, and 2 processes still
    follow 1."""
    args = ["ae", "--set", "model.name=dense_ae", "--set", "model.kwargs={latent_dim: 16}", "--set", "data.limit_train=600", "--set", "data.val_size=100",
            "--set", "train.batch_size=50", "--set", "train.epochs=1", "--deterministic", "--no-progress"]
    vislab("train", *args, "--run-dir", tmp_path / "one")
    vislab("train", *args, "--run-dir", tmp_path / "two", "--nproc", "2")
    assert max_diff(weights(tmp_path / "one"), weights(tmp_path / "two")) < 1e-5


def test_segmentation_trains_with_two_processes(tmp_path):
    r = vislab("train", "fcn32s", "--set", "data.kwargs={image_size: 32, train: 64, val: 16, test: 16}",
               "--set", "train.batch_size=16", "--set", "train.epochs=1", "--no-progress", "--run-dir", tmp_path / "seg",
               "--nproc", "2")
    assert "8 per process" in r.stdout and (tmp_path / "seg" / "checkpoints" / "best.pt").exists()


def test_detection_trains_with_two_processes(tmp_path):
    """A detector trains through its task's step function (hand-averaged gradients) on two
    processes; rank 0 alone validates (COCO AP) and writes the run."""
    r = vislab("train", "retinanet", "--set", "data.kwargs={image_size: 64, train: 64, val: 16, test: 16}",
               "--set", "model.kwargs.fpn_chs=32", "--set", "train.batch_size=16", "--set", "train.epochs=1",
               "--no-progress", "--run-dir", tmp_path / "det", "--nproc", "2")
    assert "8 per process" in r.stdout and "val_ap50" in r.stdout
    assert (tmp_path / "det" / "checkpoints" / "best.pt").exists()
    lines = (tmp_path / "det" / "metrics.jsonl").read_text().splitlines()
    assert sum('"epoch_end"' in line for line in lines) == 1          # one writer: no line twice


def test_mistakes_are_one_line(tmp_path):
    r = vislab("train", *MLP, "--set", "train.batch_size=99", "--run-dir", tmp_path / "odd", "--nproc", "2", check=False)
    assert r.returncode == 2 and "does not split evenly over 2 processes" in r.stderr
    assert not (tmp_path / "odd").exists()
    r = vislab("train", *MLP, "--set", "train.sync_bn=true", "--run-dir", tmp_path / "bn", "--nproc", "2",
               "--device", "cpu", check=False)
    assert r.returncode == 2 and "train.sync_bn needs CUDA" in r.stderr and r.stderr.count("error:") == 1
    r = vislab("train", "--run-dir", tmp_path / "bn", "--nproc", "2", "--resume", check=False)
    assert r.returncode == 2 and "is not a run directory" in r.stderr and r.stderr.count("error:") == 1
