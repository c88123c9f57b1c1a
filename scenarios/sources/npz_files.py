"""User data on disk: one `.npz` file per split, holding one array per modality and an integer `labels`.

Array kinds are inferred from shape and dtype (integers [N, L]: text tokens; floats [N, D]: tabular;
[N, C, L]: signal; [N, C, H, W]: image) unless `kinds` names them."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lifelong_moe.errors import DataError
from scenarios.modality import MASK_KEY, ModalitySpec
from scenarios.sources.base import SOURCES, SourceData, Split


@dataclass
class NpzParams:
    train: str = "???"
    test: str = "???"
    kinds: dict[str, str] = field(default_factory=dict)  # optional modality -> kind


def _read(path_str: str, role: str) -> Split:
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise DataError(f"{role}: file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    if "labels" not in arrays:
        raise DataError(f"{path}: no 'labels' array (found: {', '.join(sorted(arrays)) or 'nothing'})")
    labels = arrays.pop("labels")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) == 0:
        raise DataError(f"{path}: the split is empty")
    if labels.min() < 0:
        raise DataError(f"{path}: sample {int(np.argmin(labels))} has negative label {int(labels.min())}")
    if not arrays:
        raise DataError(f"{path}: no modality arrays beside 'labels'")
    for name, arr in arrays.items():
        if name == MASK_KEY:
            raise DataError(f"{path}: '{MASK_KEY}' is reserved and cannot name a modality")
        if arr.shape[0] != len(labels):
            raise DataError(f"{path}: modality '{name}' has {arr.shape[0]} samples but labels has {len(labels)}")
        if np.issubdtype(arr.dtype, np.floating):
            bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
            if bad.any():
                raise DataError(f"{path}: sample {int(np.flatnonzero(bad)[0])} of modality '{name}' is NaN or infinite")
        elif not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{path}: modality '{name}' has unsupported dtype {arr.dtype}")
    return Split(arrays, labels.astype(np.int64))


def _spec(name: str, train: np.ndarray, test: np.ndarray, kind: str | None, path: str) -> ModalitySpec:
    if train.shape[1:] != test.shape[1:]:
        raise DataError(f"{path}: modality '{name}' has shape {test.shape[1:]} in test but {train.shape[1:]} in train")
    if kind is None:
        integer = np.issubdtype(train.dtype, np.integer)
        kind = {2: "text" if integer else "tabular", 3: "signal", 4: "image"}.get(train.ndim)
        if kind is None:
            raise DataError(f"{path}: cannot infer the kind of modality '{name}' with shape {train.shape}; set `kinds`")
    if not kind:
        raise DataError(f"kinds.{name}: the modality kind must be a non-empty name")
    if kind == "text":
        vocab = int(max(train.max(), test.max())) + 1
        if min(train.min(), test.min()) < 0:
            raise DataError(f"{path}: text modality '{name}' has negative token ids")
        return ModalitySpec("text", tuple(train.shape[1:]), "int64", vocab)
    return ModalitySpec(kind, tuple(train.shape[1:]))


@SOURCES.register("npz", params=NpzParams)
def npz_source(params: NpzParams, seed: int) -> SourceData:
    """Your own data: `train` and `test` .npz files with one array per modality plus `labels`."""
    train, test = _read(params.train, "train"), _read(params.test, "test")
    unseen = sorted(set(np.unique(test.labels).tolist()) - set(np.unique(train.labels).tolist()))
    if unseen:
        raise DataError(f"{params.test}: labels {unseen} never occur in {params.train}; a class must be trainable")
    if set(train.inputs) != set(test.inputs):
        raise DataError(f"{params.test}: modalities {sorted(test.inputs)} differ from train's {sorted(train.inputs)}")
    specs = {m: _spec(m, train.inputs[m], test.inputs[m], params.kinds.get(m), params.test) for m in train.inputs}
    for split in (train, test):
        for m, spec in specs.items():
            split.inputs[m] = split.inputs[m].astype(spec.dtype)
    return SourceData(train, test, specs)
