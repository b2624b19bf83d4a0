"""A tiny cascade trained once through the CLI, shared by the training and CLI tests."""

import pytest

from vislab.cli import main

TINY = ["--stages", "2", "--features", "1500", "--positives-per-face", "3", "--negatives", "150",
        "--validation-negatives", "100", "--generated-negatives", "2", "--seed", "1"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vj") / "run"
    assert main(["vj", "train", "--run-dir", str(run), *TINY]) == 0
    return run
