"""Timing helpers for the benchmarks here: the wall times of a step with the device synchronised around
it (and their median), one inference pass over prepared batches, per sample, and models timed batch by
batch in turn (the least time of each batch over the repeats: noise on a shared machine only adds time)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def step_times(step: Callable[[], object], device: str, repeats: int, warmup: int = 3) -> list[float]:
    """Wall times of `repeats` calls of `step` after `warmup` calls, the device synchronised around each."""
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
    return times


def median_time(step: Callable[[], object], device: str, repeats: int, warmup: int = 3) -> float:
    return statistics.median(step_times(step, device, repeats, warmup))


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


def interleaved_per_sample_seconds(models: list[torch.nn.Module], batches: list, device: str, dtype: torch.dtype,
                                   repeats: int) -> list[float]:
    """Per model: the sum over batches of each batch's least wall time over `repeats`, divided by the samples.
    The models take turns on every batch, so a slow spell of the machine hits them alike; the least time per
    batch drops what the machine added (steadier than the median of whole passes on a shared 2-core VM)."""
    for model in models:
        model.eval()
    n = sum(len(y) for _, y, _ in batches)
    best = [[float("inf")] * len(batches) for _ in models]
    with torch.no_grad(), torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
        for model in models:  # warm-up (builds a grown structure's tables and kept stacks)
            for x, _, t in batches:
                model(x, t)
        for _ in range(repeats):
            for j, (x, _, t) in enumerate(batches):
                for i, model in enumerate(models):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    model(x, t)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    best[i][j] = min(best[i][j], time.perf_counter() - t0)
    return [sum(b) / n for b in best]
