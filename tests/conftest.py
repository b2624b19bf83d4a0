"""Shared fixtures.  Under pytest-xdist every worker gets one thread, so workers don't fight."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)

import pytest

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def run_cli(capsys):
    """Run ``vislab ARGS`` in-process: returns (exit code, stdout, stderr)."""
    from vislab.cli import main

    def run(*args: str):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err
    return run
