"""A mini-batch of named modalities that behaves like one batch tensor where generic continual-learning
code expects one.

Avalanche's templates and plugins (0.6) treat the input of a mini-batch as a tensor: they call
`x.to(device)`, slice it (`x[:n]`), and join batches with `torch.cat` (replay buffers, DER, ER-ACE, GEM).
A plain dict fails at each of these. `ModalityBatch` keeps the modalities apart (no flattening) and applies
each of those operations to every tensor it holds, masks included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import default_collate

from scenarios.errors import InputError

_JOINS = {torch.cat, torch.concat, torch.concatenate, torch.stack}


class ModalityBatch(dict):
    """`{modality: tensor, "mask": {modality: bool tensor}}` with batch-tensor operations."""

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ModalityBatch:
        return ModalityBatch({k: v.map(fn) if isinstance(v, ModalityBatch) else
                              ModalityBatch(v).map(fn) if isinstance(v, dict) else fn(v) for k, v in self.items()})

    def to(self, *args: Any, **kwargs: Any) -> ModalityBatch:
        return self.map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> ModalityBatch:
        return self.map(torch.Tensor.detach)

    def clone(self) -> ModalityBatch:
        return self.map(torch.Tensor.clone)

    def cpu(self) -> ModalityBatch:
        return self.map(torch.Tensor.cpu)

    def size(self, dim: int = 0) -> int:
        if dim != 0:
            raise ValueError("a ModalityBatch has only a batch dimension in common across modalities")
        return self.batch_size

    @property
    def batch_size(self) -> int:
        first = next(iter(self.values()))
        return first.batch_size if isinstance(first, dict) else len(first)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        return self.map(lambda t: t[key])  # samples: an int, slice, index tensor or boolean mask

    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _JOINS:
            batches = list(args[0])
            return _join(func, batches, *args[1:], **kwargs)
        raise TypeError(f"{getattr(func, '__name__', func)} is not defined on a ModalityBatch (only .to, indexing and torch.cat)")


def _join(func: Callable, batches: list[dict], *args: Any, **kwargs: Any) -> ModalityBatch:
    keys = list(batches[0])
    if any(list(b) != keys for b in batches):
        raise ValueError("cannot join mini-batches with different modalities")
    out = ModalityBatch()
    for k in keys:
        parts = [b[k] for b in batches]
        out[k] = _join(func, parts, *args, **kwargs) if isinstance(parts[0], dict) else func(parts, *args, **kwargs)
    return out


def _describe(x: Any) -> dict[str, tuple]:
    return {k: (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else _describe(v) if isinstance(v, dict) else type(v)
            for k, v in x.items()}


def check_samples(samples: list[Any]) -> None:
    """Every sample must carry the same modalities with the same shapes and dtypes as the first; the first
    that does not is named (its position in the batch and the modality)."""
    if not samples or not isinstance(samples[0], (list, tuple)) or not isinstance(samples[0][0], dict):
        return
    ref = _describe(samples[0][0])
    for i, sample in enumerate(samples[1:], start=1):
        got = _describe(sample[0])
        if got == ref:
            continue
        extra, absent = sorted(set(got) - set(ref)), sorted(set(ref) - set(got))
        if extra or absent:
            raise InputError(f"sample {i} of the batch: modalities {sorted(got)} differ from sample 0's {sorted(ref)}"
                             + (f" (unknown: {extra})" if extra else "") + (f" (missing: {absent})" if absent else ""))
        m = next(k for k in ref if got[k] != ref[k])
        raise InputError(f"sample {i} of the batch, modality '{m}': {got[m]} where sample 0 has {ref[m]}")


def collate_modalities(samples: list[Any]) -> Any:
    """`default_collate`, with each sample's modality dict collated into one ModalityBatch
    (samples that are plain dicts included). Mismatched samples get an error naming the first."""
    check_samples(samples)
    batch = default_collate(samples)
    if isinstance(batch, (list, tuple)) and isinstance(batch[0], dict) and not isinstance(batch[0], ModalityBatch):
        return [ModalityBatch(batch[0]).map(lambda t: t), *batch[1:]]
    return batch
