"""The commands that need no model load no torch: `vislab --help` answers in well under a second."""

import subprocess
import sys
import time

import pytest

CHECK = ("import sys, runpy; sys.argv = ['vislab'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('vislab', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["data", "list"], ["vj", "--help"]])
def test_no_torch_is_imported(args):
    res = subprocess.run([sys.executable, "-c", CHECK, *args], capture_output=True, text=True)
    assert res.stdout.strip().endswith("NO-TORCH"), res.stdout + res.stderr


def test_help_takes_under_a_second():
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vislab", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    assert min(times) < 1.0, times
