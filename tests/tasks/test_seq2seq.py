"""The text-only seq2seq task: its synthetic pairs, its accuracies by hand, and a tiny run of
each model through train / evaluate / report."""

import json

import numpy as np
import pytest
import torch

TINY = ["--set", "data.kwargs={train: 256, val: 32, test: 64, max_len: 6, symbols: 5}",
        "--set", "model.kwargs={embed_dim: 16, hidden_dim: 16, dropout: 0.0}", "--set", "train.epochs=1",
        "--set", "train.batch_size=32", "--no-progress"]


def test_pairs_are_reversed_and_sorted_sources():
    from vislab.sequence.text import EOS_INDEX, PAD_INDEX
    from vislab.tasks.seq2seq import make_pairs, options
    for op in ("reverse", "sort"):
        opts = options({"op": op, "min_len": 2, "max_len": 7, "symbols": 6})
        src, tgt = make_pairs("test", 50, opts)
        assert src.shape == tgt.shape == (50, 8)
        for s, t in zip(src.tolist(), tgt.tolist()):
            x = s[:s.index(EOS_INDEX)]
            y = t[:t.index(EOS_INDEX)]
            assert 2 <= len(x) <= 7 and all(v == PAD_INDEX for v in s[len(x) + 1:])
            assert y == (x[::-1] if op == "reverse" else sorted(x))
    a, _ = make_pairs("train", 20, options({}))
    b, _ = make_pairs("test", 20, options({}))
    assert not torch.equal(a, b)                    # separate streams per split


def test_accuracies_by_hand():
    from vislab.sequence.text import EOS_INDEX, PAD_INDEX
    from vislab.tasks.seq2seq import accuracies
    tgt = torch.tensor([[4, 5, 6, EOS_INDEX], [7, 8, EOS_INDEX, PAD_INDEX]])
    exact, tokens = accuracies([[4, 5, 6], [7, 4]], tgt)
    assert exact.tolist() == [1.0, 0.0] and tokens.tolist() == [1.0, 0.5]
    exact, tokens = accuracies([[4, 5], [7, 8, 9]], tgt)           # too short / too long: not exact
    assert exact.tolist() == [0.0, 0.0] and np.allclose(tokens, [2 / 3, 1.0])


@pytest.mark.parametrize("recipe", ["seq2seq_lstm", "seq2seq_attention"])
def test_train_evaluate_report(recipe, run_cli, tmp_path):
    run = tmp_path / recipe
    code, _, err = run_cli("train", recipe, "--run-dir", run, *TINY)
    assert code == 0, err
    code, out, err = run_cli("evaluate", run)
    assert code == 0 and "exact match" in out
    ev = json.loads((run / "eval.json").read_text())
    n = sum(v["n"] for v in ev["by_length"].values())
    assert n == ev["num_test_pairs"] == 64
    assert ev["exact"] == pytest.approx(sum(v["exact"] * v["n"] for v in ev["by_length"].values()) / n)
    assert run_cli("report", run)[0] == 0


def test_user_mistakes(run_cli, tmp_path):
    code, _, err = run_cli("train", "seq2seq_lstm", "--run-dir", tmp_path / "a", "--set", "data.kwargs={op: shuffle}")
    assert code == 2 and "reverse, sort" in err
    code, _, err = run_cli("train", "seq2seq_lstm", "--run-dir", tmp_path / "b", "--set", "model.name=show_tell")
    assert code == 2 and "seq2seq task trains one of" in err
