"""Test-time views of a multimodal dataset with modalities removed: a subset of modalities kept, or each
modality missing at a given rate. Removed means masked as absent and zeroed, never zeros posing as data."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from scenarios.batch import collate_modalities
from scenarios.modality import MASK_KEY


class MaskedView(Dataset):
    """Samples `indices` of `dataset` (all by default), with `drop[m][k]` True meaning the k-th of them
    lacks modality m."""

    collate_fn = staticmethod(collate_modalities)

    def __init__(self, dataset: Any, drop: dict[str, np.ndarray], indices: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        self.drop = {m: np.asarray(d, dtype=bool) for m, d in drop.items()}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        x, *rest = self.dataset[self.indices[i]]
        x = type(x)(x)
        x[MASK_KEY] = type(x[MASK_KEY])(x[MASK_KEY])
        for m, d in self.drop.items():
            if d[i] and m in x:
                x[m] = torch.zeros_like(x[m])
                x[MASK_KEY][m] = torch.zeros_like(x[MASK_KEY][m])
        return (x, *rest)


_PRESENT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def present_matrix(dataset: Any, modalities: Sequence[str]) -> np.ndarray:
    """(n, M) bool: which modalities each sample carries. Cached per dataset (masks never change), since
    reading every sample through an Avalanche dataset costs far more than an evaluation batch."""
    key = tuple(modalities)
    try:
        cached = _PRESENT_CACHE.setdefault(dataset, {})
    except TypeError:  # not weakly referenceable or hashable: no cache
        cached = {}
    if key not in cached:
        rows = [[bool(dataset[i][0][MASK_KEY][m]) for m in modalities] for i in range(len(dataset))]
        cached[key] = np.asarray(rows, dtype=bool).reshape(len(dataset), len(modalities))
    return cached[key]


def keep_subset(dataset: Any, modalities: Sequence[str], keep: Sequence[str]) -> MaskedView:
    """The samples that carry every modality in `keep`, with all other modalities removed (empty if none do)."""
    present = present_matrix(dataset, modalities)
    cols = [list(modalities).index(m) for m in keep]
    rows = np.flatnonzero(present[:, cols].all(1))
    return MaskedView(dataset, {m: np.ones(len(rows), dtype=bool) for m in modalities if m not in keep}, rows)


def keep_one(present: Any, drop: Any, draw: Callable[[tuple[int, ...]], Any]) -> Any:
    """`drop` (n, M), except that a sample it would strip of every modality it had keeps one of them: the
    present one with the highest score from `draw(shape)`, which is called only if some sample needs it.
    The one rule for "drop modalities but keep at least one", on numpy arrays or torch tensors alike."""
    emptied = ~(present & ~drop).any(1) & present.any(1)
    if not emptied.any():
        return drop
    scores = draw(tuple(present.shape))
    scores[~present] = -1.0
    kept = drop.copy() if isinstance(drop, np.ndarray) else drop.clone()
    rows = emptied.nonzero()[0] if isinstance(emptied, np.ndarray) else emptied.nonzero(as_tuple=True)[0]
    kept[rows, scores[rows].argmax(1)] = False
    return kept


def with_missing_rate(dataset: Any, modalities: Sequence[str], rate: float, seed: int) -> MaskedView:
    """Each present modality of each sample removed with probability `rate`, independently; a sample keeps
    at least one of the modalities it had (one of them, at random, is restored if all were drawn)."""
    present = present_matrix(dataset, modalities)
    rng = np.random.default_rng(seed)
    drop = keep_one(present, (rng.random(present.shape) < rate) & present, rng.random)
    return MaskedView(dataset, {m: drop[:, k] for k, m in enumerate(modalities)})


def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, smallest first."""
    return [c for r in range(1, len(modalities) + 1) for c in combinations(sorted(modalities), r)]


def drop_modalities(x: dict[str, Any], rate: float, modalities: Sequence[str]) -> dict[str, Any]:
    """Modality dropout on a collated batch: each present modality of each sample is masked out with
    probability `rate` (its tensor zeroed), keeping at least one of the modalities the sample had.
    Uses torch's global generator, so it follows the run's seed."""
    names = [m for m in modalities if m in x]
    if rate <= 0 or len(names) < 2:
        return x
    present = torch.stack([x[MASK_KEY][m].bool() for m in names], 1)  # (B, M)
    drop = (torch.rand(present.shape, device=present.device) < rate) & present
    drop = keep_one(present, drop, lambda shape: torch.rand(shape, device=present.device))
    out = type(x)(x)
    out[MASK_KEY] = type(x[MASK_KEY])(x[MASK_KEY])
    for k, m in enumerate(names):
        if drop[:, k].any():
            keep = ~drop[:, k]
            out[MASK_KEY][m] = x[MASK_KEY][m] & keep if x[MASK_KEY][m].dtype == torch.bool else x[MASK_KEY][m] * keep
            out[m] = x[m] * keep.view(-1, *([1] * (x[m].dim() - 1))).to(x[m].dtype)
    return out
