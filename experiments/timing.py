"""Median wall time of a step, with the device synchronised around it (for the benchmarks here)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_time(step: Callable[[], object], device: str, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
