"""Data sources: named generators or loaders of labelled multimodal arrays, split into train and test."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.cache import shared_memory
from scenarios.errors import ConfigError, DataError
from scenarios.modality import ModalitySpec
from scenarios.registry import Registry

MAX_CLASSES = 100_000  # labels index classes, and models size their heads and class masks by the largest label
MAX_GENERATED_VALUES = 500_000_000  # a generated source holds at most this many numbers per split (2 GB as float32)


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
    """A loaded source: train and test splits plus the description of each modality. `files` fingerprints
    the files it was read from (`file_fingerprint`), so a resumed run can refuse data that changed."""

    train: Split
    test: Split
    modalities: dict[str, ModalitySpec]
    classes: list[int] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    class_names: dict[int, str] = field(default_factory=dict)  # label -> the name its files or table gave it
    # modality -> what turned decoded arrays into the samples: {"scale": s} and/or {"mean": [...], "std": [...]}
    # (fitted on the training split), so new files can be prepared the same way (`lifelong-moe predict`)
    preparation: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = sorted(int(c) for c in np.unique(np.concatenate([self.train.labels, self.test.labels])))


def memory_bytes() -> int | None:
    """This machine's memory: what a file's header may declare before its data is read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


ARRAYS_PARAM = "(arrays)"  # the `param` of a fingerprint taken of a source's arrays, not of one file


def arrays_fingerprint(data: SourceData) -> dict[str, Any]:
    """What identifies a source's content when it names no single file (folders of images or audio, a
    table, a saved dataset, generated data): the SHA-256 of its arrays, so a resume on changed data is
    refused whatever the source read."""
    h, size = hashlib.sha256(), 0
    for split_name, split in (("train", data.train), ("test", data.test)):
        for name, a in sorted({**split.inputs, "<labels>": split.labels}.items()):
            a = np.asarray(a)
            h.update(f"{split_name}|{name}|{a.dtype.str}|{a.shape}|".encode())
            raw = repr(a.tolist()).encode() if a.dtype == object else np.ascontiguousarray(a).reshape(-1).view(np.uint8)
            h.update(raw)
            size += len(raw)
    return {"param": ARRAYS_PARAM, "path": "", "size": size, "mtime_ns": 0, "sha256": h.hexdigest()}


def file_fingerprint(param: str, path: Path, data: bytes) -> dict[str, Any]:
    """What identifies a data file's content: its size, modification and change times and SHA-256 (of
    `data`, the bytes that were read), under the name of the source param that gave its path."""
    st = path.stat()
    return {"param": param, "path": str(path), "size": len(data), "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "sha256": hashlib.sha256(data).hexdigest()}


SourceFn = Callable[[Any, int], SourceData]
SOURCES: Registry[SourceFn] = Registry("data source", builtins=("scenarios.sources",))
"""Registered sources: `fn(params, seed) -> SourceData`. Add one with `@SOURCES.register(name, params=Dataclass)`
(`generated=True` when its data follow from its params and the seed alone, so a process may reuse them).
A source reports bad params with ValueError or DataError, starting the message with the param's name."""

_CACHE: dict[Any, SourceData] = {}


def _unchanged(files: list[dict[str, Any]]) -> bool:
    for f in files:
        if f["param"] == ARRAYS_PARAM:
            continue
        try:
            st = os.stat(f["path"])
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != (f["size"], f["mtime_ns"], f.get("ctime_ns", st.st_ctime_ns)):
            return False  # ctime too: a file rewritten with its old mtime put back is read again
    return True


def load_source(kind: str, params: Any, seed: int, key: str = "") -> SourceData:
    """Build (or fetch from the in-process cache) the source `kind` with validated `params`. Errors name
    `key.params.<param>` (the source's own message) and, for the arrays, the split and sample at fault.
    A cached source read from files is read again if a file changed since."""
    fn = SOURCES.get(kind, key)
    cache_key = (kind, repr(params), seed)
    shared = shared_memory()  # inside `shared_in_process` (a comparison): every source once, as first read
    if shared is not None and ("source", cache_key) in shared:
        return shared[("source", cache_key)]
    cached = _CACHE.get(cache_key)
    if cached is not None and _unchanged(cached.files):
        return cached
    where = f"{key}.params" if key else "params"
    try:
        data = fn(params, seed)
    except DataError as err:
        raise DataError(f"{where}.{err}") from None
    except MemoryError:
        raise ConfigError(f"{where}: the source needs more memory than is available; make it smaller") from None
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    check_source_data(data, key or kind)
    generated = bool(SOURCES.meta(kind).get("generated"))  # its data follow from params and seed alone
    if data.files:
        _CACHE[cache_key] = data  # read again when one of its files changes (`_unchanged`)
    elif generated:
        _CACHE[cache_key] = data = replace(data, files=[arrays_fingerprint(data)])
    else:  # folders, tables, saved datasets: no cheap test of change, so no reuse (their decoding is cached on disk)
        data = replace(data, files=[arrays_fingerprint(data)])
    if shared is not None:
        shared[("source", cache_key)] = data
    return data


def check_source_data(data: SourceData, key: str) -> None:
    """What every source must give, whoever wrote it: labels are class indices in 0..MAX_CLASSES-1, and each
    modality has one sample per label."""
    for name, split in (("train", data.train), ("test", data.test)):
        labels = split.labels
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{key}: the {name} labels must be a 1-D integer array")
        if len(labels) and (labels.min() < 0 or labels.max() >= MAX_CLASSES):
            bad = int(np.flatnonzero((labels < 0) | (labels >= MAX_CLASSES))[0])
            raise DataError(f"{key}: {name} sample {bad} has label {int(labels[bad])}; labels must lie in 0..{MAX_CLASSES - 1}")
        for m, arr in split.inputs.items():
            if len(arr) != len(labels):
                raise DataError(f"{key}: {name} modality '{m}' has {len(arr)} samples for {len(labels)} labels")


def check_counts(**counts: int) -> None:
    """Generated sources: each count positive (ValueError naming the param)."""
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name}: must be at least 1, got {value}")


def check_budget(n_values: int, what: str) -> None:
    """Generated sources: refuse params that would allocate more than MAX_GENERATED_VALUES numbers."""
    if n_values > MAX_GENERATED_VALUES:
        raise ValueError(f"{what} asks for {n_values:,} values per split, more than the {MAX_GENERATED_VALUES:,} allowed")


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
