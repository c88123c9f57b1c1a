"""User data on disk: one `.npz` file per split, holding one array per modality and an integer `labels`.

Array kinds are inferred from shape and dtype (integers [N, L]: text tokens; floats [N, D]: tabular;
[N, C, L]: signal; [N, C, H, W]: image) unless `kinds` names them; train and test must agree.

Everything is checked before it is used, and again after every conversion, with the param (`train`,
`test`, `kinds.<modality>`), the file and the sample named: each member's header is read first, so a
header that declares more data than the file holds is refused without allocating it; labels are class
indices below `MAX_CLASSES` and token ids below `MAX_TOKEN_ID` + 1 (the model sizes its heads and
embedding tables by them); float data must stay finite as float32."""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.errors import DataError
from scenarios.modality import MASK_KEY, ModalitySpec
from scenarios.sources.base import MAX_CLASSES, SOURCES, SourceData, Split, file_fingerprint, memory_bytes
from scenarios.sources.files import check_distinct_splits

MAX_TOKEN_ID = 2**20 - 1  # a vocabulary of about a million tokens; larger ids would make embedding tables huge
SAMPLE_NDIM = {"text": 1, "signal": 2, "image": 3}  # per-sample dimensions of the built-in kinds (tabular: any)
SHAPES = {"text": "[L] token ids", "signal": "[C, L]", "image": "[C, H, W]"}
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class NpzParams:
    train: str = "???"  # a .npz with one array per modality (first axis: samples) and `labels`
    test: str = "???"  # the same for the test split
    kinds: dict[str, str] = field(default_factory=dict)  # optional modality -> kind


@dataclass
class _File:
    """One split's file as read: where (`role: path`, the prefix of its errors), arrays and fingerprint."""

    role: str
    path: Path
    arrays: dict[str, np.ndarray]
    labels: np.ndarray
    fingerprint: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.role}: {self.path}"


def _header(fh: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        shape, _, dtype = np.lib.format._read_array_header(fh, version)  # (3, 0): header in UTF-8
    return tuple(shape), dtype


def _arrays(data: bytes, where: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz archive held in `data`, each header checked before its data is read."""
    if data[:6] == b"\x93NUMPY":
        raise DataError(f"{where}: a single .npy array, not an .npz archive; save each split with "
                        f"np.savez(path, <modality>=array, labels=labels)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        raise DataError(f"{where}: not a readable .npz file ({type(err).__name__}: {err})") from None
    names = [m.filename for m in members]
    budget, total = memory_bytes(), 0
    arrays: dict[str, np.ndarray] = {}
    for info in members:
        if names.count(info.filename) > 1:
            raise DataError(f"{where}: the archive holds member '{info.filename}' twice")
        if info.is_dir() or not info.filename.endswith(".npy"):
            raise DataError(f"{where}: member '{info.filename}' is not a NumPy array (.npy); an .npz holds arrays only")
        name = info.filename[: -len(".npy")]
        try:
            with archive.open(info) as fh:
                shape, dtype = _header(fh)
                offset = fh.tell()
            if dtype.hasobject:
                raise DataError(f"{where}: array '{name}' holds Python objects (dtype {dtype}); only numeric arrays are read")
            declared = math.prod(shape) * dtype.itemsize
            held = info.file_size - offset
            if declared != held:
                raise DataError(f"{where}: array '{name}' declares shape {shape} of {dtype} ({declared:,} bytes) but holds "
                                f"{held:,} bytes; the file is damaged")
            total += declared
            if budget is not None and total > budget:
                raise DataError(f"{where}: its arrays need {total / 2**30:.1f} GiB, more than this machine's "
                                f"{budget / 2**30:.1f} GiB of memory")
            with archive.open(info) as fh:
                arrays[name] = np.lib.format.read_array(fh, allow_pickle=False)
        except DataError:
            raise
        except MemoryError:
            raise DataError(f"{where}: array '{name}' does not fit in memory") from None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as err:
            raise DataError(f"{where}: array '{name}' is not a readable .npy array ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''})") from None
    return arrays


def _check_labels(labels: Any, where: str) -> np.ndarray:
    if labels.dtype == np.bool_:
        raise DataError(f"{where}: 'labels' holds booleans; labels are integer class indices 0, 1, ...")
    if not np.issubdtype(labels.dtype, np.integer):
        example = f" (sample 0 is {labels.reshape(-1)[0]!r})" if labels.size else ""
        raise DataError(f"{where}: 'labels' must hold integer class indices, got dtype {labels.dtype}{example}")
    if labels.ndim != 1:
        raise DataError(f"{where}: 'labels' must be a 1-D integer array (one class per sample), got shape {labels.shape}")
    if len(labels) == 0:
        raise DataError(f"{where}: the split is empty")
    if labels.min() < 0:
        raise DataError(f"{where}: sample {int(np.argmin(labels))} has negative label {int(labels.min())}")
    if labels.max() >= MAX_CLASSES:  # compared before any cast: uint64 labels beyond int64 must not wrap
        i = int(np.argmax(labels))
        raise DataError(f"{where}: sample {i} has label {labels[i]}; labels must lie in 0..{MAX_CLASSES - 1} "
                        f"(number the classes from 0)")
    return labels.astype(np.int64)


def _check_modality(name: str, arr: np.ndarray, n: int, where: str) -> None:
    if name == MASK_KEY:
        raise DataError(f"{where}: '{MASK_KEY}' is reserved and cannot name a modality")
    if not name.strip() or any(c in name for c in "./[]\\") or any(ord(c) < 32 for c in name):
        raise DataError(f"{where}: {name!r} cannot name a modality (use letters, digits, '_' or '-')")
    if arr.ndim == 0:
        raise DataError(f"{where}: modality '{name}' is a single value, not one row per sample")
    if arr.shape[0] != n:
        raise DataError(f"{where}: modality '{name}' has {arr.shape[0]} samples but labels has {n}")
    if arr.ndim == 1:
        raise DataError(f"{where}: modality '{name}' has one number per sample (shape {arr.shape}); "
                        f"give it a feature axis, e.g. x[:, None]")
    if 0 in arr.shape[1:]:
        raise DataError(f"{where}: modality '{name}' has no features (samples of shape {arr.shape[1:]})")
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{where}: modality '{name}' has unsupported dtype {arr.dtype}; "
                        f"use floats (features) or integers (token ids)")
    if np.issubdtype(arr.dtype, np.floating):
        _check_finite(name, arr, where, "is NaN or infinite")


def _check_finite(name: str, arr: np.ndarray, where: str, problem: str) -> None:
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if bad.any():
        raise DataError(f"{where}: sample {int(np.flatnonzero(bad)[0])} of modality '{name}' {problem}")


def _read(path_str: Any, role: str) -> _File:
    if not isinstance(path_str, str) or not path_str.strip() or "\0" in path_str:
        raise DataError(f"{role}: must be the path of an .npz file, got {path_str!r}")
    path = Path(path_str).expanduser()
    if path.is_dir():
        raise DataError(f"{role}: {path} is a directory, not an .npz file")
    if not path.exists():
        raise DataError(f"{role}: file not found: {path}")
    if not path.is_file():
        raise DataError(f"{role}: {path} is not a regular file")
    try:
        data = path.read_bytes()  # read once: the arrays and the fingerprint come from the same bytes
    except OSError as err:
        raise DataError(f"{role}: {path}: cannot read ({err.strerror or type(err).__name__})") from None
    except MemoryError:
        raise DataError(f"{role}: {path}: does not fit in memory") from None
    where = f"{role}: {path}"
    arrays = _arrays(data, where)
    if "labels" not in arrays:
        raise DataError(f"{where}: no 'labels' array (found: {', '.join(sorted(arrays)) or 'nothing'})")
    labels = _check_labels(arrays.pop("labels"), where)
    if not arrays:
        raise DataError(f"{where}: no modality arrays beside 'labels'")
    for name, arr in arrays.items():
        _check_modality(name, arr, len(labels), where)
    return _File(role, path, arrays, labels, file_fingerprint(role, path, data))


def _spec(name: str, train: _File, test: _File, kind: Any) -> ModalitySpec:
    """The modality's kind, shape and dtype, decided from both splits."""
    tr, te = train.arrays[name], test.arrays[name]
    if tr.shape[1:] != te.shape[1:]:
        raise DataError(f"{test.where}: modality '{name}' has shape {te.shape[1:]} in test but {tr.shape[1:]} in train")
    integer = np.issubdtype(tr.dtype, np.integer)
    if kind == "text":  # declared: the split that holds floats is the one at fault, whichever it is
        for f, arr in ((train, tr), (test, te)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise DataError(f"kinds.{name}: kind 'text' takes integer token ids, but '{name}' in {f.path} holds {arr.dtype}")
    elif kind is None and integer != np.issubdtype(te.dtype, np.integer):  # inferred from train: test is at fault
        raise DataError(f"{test.where}: modality '{name}' holds {te.dtype} in test but {tr.dtype} in train; both splits "
                        f"must hold integers (token ids) or both floats")
    per_sample = tr.ndim - 1
    if kind is None:
        kind = ("text" if integer else "tabular") if per_sample == 1 else {2: "signal", 3: "image"}.get(per_sample)
        if kind is None:
            raise DataError(f"{train.where}: cannot infer the kind of modality '{name}' with samples of shape "
                            f"{tr.shape[1:]}; set kinds.{name}")
        if kind == "image" and tr.shape[3] in (1, 3, 4) and tr.shape[1] not in (1, 3, 4):  # [N, H, W, C]?
            raise DataError(f"{train.where}: modality '{name}' has samples of shape {tr.shape[1:]}, which looks channels last; "
                            f"images are [N, C, H, W] (np.transpose(a, (0, 3, 1, 2))), or set kinds.{name}: image to keep it")
    elif not isinstance(kind, str) or not kind.strip():
        raise DataError(f"kinds.{name}: the modality kind must be a non-empty name")
    elif kind in SAMPLE_NDIM and per_sample != SAMPLE_NDIM[kind]:
        raise DataError(f"kinds.{name}: kind '{kind}' takes samples of shape {SHAPES[kind]}, but '{name}' in "
                        f"{train.path} has samples of shape {tr.shape[1:]}")
    if kind == "text":
        if not integer:
            raise DataError(f"kinds.{name}: kind 'text' takes integer token ids, but '{name}' in {train.path} holds {tr.dtype}")
        top = 0
        for f, arr in ((train, tr), (test, te)):
            rows = arr.reshape(len(arr), -1)
            if arr.min() < 0:
                raise DataError(f"{f.where}: sample {int(np.flatnonzero((rows < 0).any(1))[0])} of text modality "
                                f"'{name}' has negative token id {arr.min()}")
            if arr.max() > MAX_TOKEN_ID:
                raise DataError(f"{f.where}: sample {int(np.flatnonzero((rows > MAX_TOKEN_ID).any(1))[0])} of text "
                                f"modality '{name}' has token id {arr.max()}; token ids must lie in 0..{MAX_TOKEN_ID}")
            top = max(top, int(arr.max()))
        return ModalitySpec("text", tuple(tr.shape[1:]), "int64", top + 1)
    return ModalitySpec(kind, tuple(tr.shape[1:]))


@SOURCES.register("npz", params=NpzParams)
def npz_source(params: NpzParams, seed: int) -> SourceData:
    """Your own data: `train` and `test` .npz files with one array per modality plus `labels`."""
    train, test = _read(params.train, "train"), _read(params.test, "test")
    check_distinct_splits(train.path, test.path, "test")
    if set(train.arrays) != set(test.arrays):
        raise DataError(f"{test.where}: modalities {sorted(test.arrays)} differ from train's {sorted(train.arrays)}")
    for name in params.kinds:
        if name not in train.arrays:
            raise DataError(f"kinds.{name}: no modality '{name}' in {train.path} (it has {', '.join(sorted(train.arrays))})")
    unseen = sorted(set(np.unique(test.labels).tolist()) - set(np.unique(train.labels).tolist()))
    if unseen:
        raise DataError(f"{test.where}: labels {unseen} never occur in {train.path}; a class must be trainable")
    specs = {m: _spec(m, train, test, params.kinds.get(m)) for m in train.arrays}  # the archive's order
    splits = []
    for f in (train, test):
        inputs = {}
        for m, spec in specs.items():
            with np.errstate(over="ignore"):  # an overflow becomes inf, which the check below reports
                inputs[m] = f.arrays[m].astype(spec.dtype)
            if np.issubdtype(inputs[m].dtype, np.floating):  # checked again after the cast: 1e39 is finite in float64 only
                _check_finite(m, inputs[m], f.where, f"overflows float32 (a value beyond ±{FLOAT32_MAX:.3g})")
        splits.append(Split(inputs, f.labels))
    return SourceData(splits[0], splits[1], specs, files=[train.fingerprint, test.fingerprint])
