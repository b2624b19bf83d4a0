"""What several benchmarks share: this machine's measured fp32 matmul speed, printed beside every
timing so that a figure can be read against what the machine could do at that moment."""

from __future__ import annotations

import time

import torch


def measured_sgemm_gflops(best_of: int, n: int = 2048) -> float:
    """fp32 ``n x n`` matmul GFLOP/s on this machine now: the best of ``best_of`` timed products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(best_of):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
