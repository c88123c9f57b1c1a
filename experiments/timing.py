"""Timing helpers for the benchmarks here: the median wall time of a step with the device synchronised
around it, and one inference pass over prepared batches, per sample."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

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


def to_device(batch: Any, device: str) -> Any:
    """A batch (nested dicts, lists and tuples of tensors) on `device`."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


def inference_pass_seconds(model: torch.nn.Module, batches: list, device: str, dtype: torch.dtype) -> float:
    """Wall time of one inference pass over (inputs, labels, task labels) batches, divided by the samples;
    bfloat16 by autocast where `dtype` says so."""
    model.eval()
    n = sum(len(y) for _, y, _ in batches)
    with torch.no_grad(), torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for x, _, t in batches:
            model(x, t)
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n
