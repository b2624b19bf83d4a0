import os
import random

import numpy as np
import pytest
import torch

from vislab.engine.checkpoint import (
    export_safetensors,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from vislab.errors import UserError
from vislab.io import atomic_torch_save


class NotATensor:
    pass


def test_pickled_code_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"model": NotATensor()}, p)
    with pytest.raises(UserError, match="holds pickled Python objects .*NotATensor") as e:
        load_checkpoint(str(p))
    assert "\n" not in str(e.value) and "Weights only" not in str(e.value)


def test_pickled_checkpoint_is_one_line_of_vislab_s_own(run_cli, tmp_path):
    """Through the CLI: exit 2, one stderr line, no torch warning or torch message."""
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--run-dir", run, "--set", "data.name=digits", "--set", "train.epochs=1",
                           "--set", "model.kwargs={widths: [4, 4, 4]}", "--no-progress")
    assert code == 0, err
    torch.save({"model": NotATensor()}, run / "checkpoints" / "best.pt")
    code, out, err = run_cli("evaluate", run)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "pickled Python objects" in err and "torch" not in err.lower().replace("torch.load", "")


def test_truncated_checkpoint(tmp_path):
    p = tmp_path / "x.pt"
    atomic_torch_save({"w": torch.ones(1000)}, str(p))
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(str(p))


def test_atomic_save_leaves_no_temp(tmp_path):
    p = tmp_path / "a.pt"
    atomic_torch_save({"w": torch.ones(3)}, str(p))
    atomic_torch_save({"w": torch.zeros(3)}, str(p))
    assert os.listdir(tmp_path) == ["a.pt"]
    assert torch.equal(load_checkpoint(str(p))["w"], torch.zeros(3))


def test_rng_state_roundtrip_through_weights_only(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    p = tmp_path / "rng.pt"
    atomic_torch_save({"rng": rng_state()}, str(p))
    want = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(load_checkpoint(str(p))["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_safetensors_export(tmp_path):
    from safetensors.torch import load_file
    m = torch.nn.Linear(3, 2)
    export_safetensors(m.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = load_file(str(tmp_path / "w.safetensors"))
    assert torch.equal(loaded["weight"], m.weight.detach())
