"""Data sources: named generators or loaders of labelled multimodal arrays, split into train and test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lifelong_moe.registry import Registry
from scenarios.modality import ModalitySpec


@dataclass
class Split:
    """One split of a source: `inputs[modality]` is an array [N, ...]; `labels` is int64 [N]."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: np.ndarray) -> Split:
        return Split({m: a[index] for m, a in self.inputs.items()}, self.labels[index])


@dataclass
class SourceData:
    """A loaded source: train and test splits plus the description of each modality."""

    train: Split
    test: Split
    modalities: dict[str, ModalitySpec]
    classes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = sorted(int(c) for c in np.unique(np.concatenate([self.train.labels, self.test.labels])))


SourceFn = Callable[[Any, int], SourceData]
SOURCES: Registry[SourceFn] = Registry("data source", builtins=("scenarios.sources",))
"""Registered sources: `fn(params, seed) -> SourceData`. Add one with `@SOURCES.register(name, params=Dataclass)`."""

_CACHE: dict[Any, SourceData] = {}


def load_source(kind: str, params: Any, seed: int, key: str = "") -> SourceData:
    """Build (or fetch from the in-process cache) the source `kind` with validated `params`."""
    fn = SOURCES.get(kind, key)
    cache_key = (kind, repr(params), seed)
    if cache_key not in _CACHE:
        _CACHE[cache_key] = fn(params, seed)
    return _CACHE[cache_key]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a per-class train/test split, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
