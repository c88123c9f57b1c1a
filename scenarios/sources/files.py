"""What the file sources share: listing class folders, naming classes, the pool of every sample before
the train/test split (so `paired` can join sources by id first), and the split itself.

Labels: class names that are all whole numbers ("0", "7", "1.0", ...) are those numbers, so folders
named 0-9 line up with digit datasets (two folders spelling one number, "7" and "007", are refused);
other names are numbered in sorted order. Splits: a root with
`train/` and `test/` sub-folders (or a `split` column) is split as given; otherwise a class-stratified
split with `test_fraction`, reproducible from the run's seed."""

from __future__ import annotations

import csv
import math
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.errors import DataError
from scenarios.modality import ModalitySpec
from scenarios.sources.base import MAX_CLASSES, SourceData, Split, stratified_split
from scenarios.sources.tokenize import TokenizerParams, tokenize

SPLIT_NAMES = ("train", "test")
SPLIT_LIKE = ("train", "test", "val", "valid", "validation")  # folder names, any case, refused as classes


@dataclass
class Pool:
    """Every sample of a file source, before its train/test split.

    `inputs[m]` is an array [N, ...]; text modalities are object arrays of strings, tokenized after the
    split (the vocabulary comes from the training split). `ids` are per-sample names used to pair
    sources (file stems or an id column); `split` is "train"/"test" per sample where the data says so."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    ids: np.ndarray
    split: np.ndarray | None
    modalities: dict[str, ModalitySpec]
    class_names: dict[int, str]  # label -> class name
    where: str  # what errors name: the root folder or file
    tokenizers: dict[str, TokenizerParams] = field(default_factory=dict)  # per text modality
    standardize: tuple[str, ...] = ()  # modalities scaled by the training split's mean and std per channel
    scale: dict[str, float] = field(default_factory=dict)  # stored dtype -> float32 by this factor (uint8 images)

    def __len__(self) -> int:
        return len(self.labels)


POOLS: dict[str, Callable[[Any, int], Pool]] = {}
"""Kinds whose samples can be paired by id: `kind -> fn(params, seed) -> Pool`."""


_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MISSING = frozenset({"nan", "NaN", "-nan", "-NaN", "NA", "N/A", "n/a", "NULL", "null", "None", "<NA>", "#N/A", "#NA", "?"})
"""Cells that spreadsheets and pandas write for a missing value: never a class of a table's label column."""


def number(name: str) -> float | None:
    """The number a label spells ('7', '007', '1.0', '1e1'; ASCII digits only), else None (a name)."""
    return float(name) if _NUMBER.fullmatch(name) else None


def label_array(raw: list[Any], where: str, at: Callable[[int], str] = lambda i: f"sample {i}",
                cells: bool = True) -> tuple[np.ndarray, dict[int, str]]:
    """Labels from class names or numbers: (int64 labels, label -> class name). When every label is a
    number, the labels are those numbers, which must be whole (so `1.0` is class 1) and in
    0..MAX_CLASSES-1; otherwise the names are numbered in sorted order. `at(i)` names sample i in errors;
    `cells`: the labels are a table's cells, where a missing-value marker such as `nan` is refused."""
    names = [unicodedata.normalize("NFC", str(v).strip()) for v in raw]  # one name, however its accents were typed
    for i, n in enumerate(names):
        if n == "":
            raise DataError(f"{where}: {at(i)} has an empty label")
        if cells and n in MISSING:
            raise DataError(f"{where}: {at(i)} has a missing label ('{n}'); drop the row or give it a class")
    values = [number(n) for n in names]
    if names and all(v is not None for v in values):
        for i, v in enumerate(values):
            if not math.isfinite(v) or v != int(v):
                raise DataError(f"{where}: {at(i)} has label '{names[i]}', not a whole number; when every label is a "
                                f"number, the labels are class indices")
            if v < 0:
                raise DataError(f"{where}: {at(i)} has negative label {names[i]}")
            if v >= MAX_CLASSES:
                raise DataError(f"{where}: {at(i)} has label {names[i]}; labels must lie in 0..{MAX_CLASSES - 1}")
        labels = np.array([int(v) for v in values], dtype=np.int64)
        return labels, {int(c): str(int(c)) for c in np.unique(labels)}
    mapping = {n: i for i, n in enumerate(sorted(set(names)))}
    labels = np.array([mapping[n] for n in names], dtype=np.int64)
    return labels, {label: name for name, label in mapping.items()}


def check_class_names(names: list[str], where: str) -> None:
    """Class folders whose names are all numbers name classes by value: two folders that spell one
    number ('7' and '007') would silently become one class, so they are refused."""
    values = [number(n) for n in names]
    if not names or any(v is None for v in values):
        return
    seen: dict[float, str] = {}
    for n, v in sorted(zip(names, values)):
        if v in seen:
            raise DataError(f"{where}: class folders '{seen[v]}' and '{n}' both name class {v:g}; rename one so "
                            f"that each class has one folder")
        seen[v] = n


def _check_layout(root: Path, subdirs: set[str], split: bool, key: str) -> None:
    """A split root holds `train/` and `test/` alone (a folder beside them would be silently left out); a root
    of class folders holds no folder named like a split in another case (`Train/`, `val/`) that holds class
    folders itself: it would silently become one class holding every other class's files."""
    if split:
        extra = sorted(subdirs - set(SPLIT_NAMES))
        if extra:
            raise DataError(f"{key}: {root} holds '{extra[0]}' beside train/ and test/; move it into one of them "
                            f"(its class folders) or out of the root")
        return
    looks = sorted(d for d in subdirs if d.lower() in SPLIT_LIKE  # a class may be named `train` (CIFAR-100 has one)
                   and any(p.is_dir() and not p.name.startswith(".") for p in (root / d).iterdir()))
    if looks:
        raise DataError(f"{key}: {root}/{looks[0]} looks like a split folder; a split root holds exactly `train/` and "
                        f"`test/` (lower case) with class folders inside, else class folders alone")


def _check_one_folder_per_name(base: Path, class_dirs: list[Path], key: str) -> None:
    """Two folders whose names differ only in Unicode normalisation ('café' typed on two systems) print alike
    but would be two classes: refused, like '7' and '007'."""
    names: dict[str, str] = {}
    for d in (p.name for p in class_dirs):
        nfc = names.setdefault(unicodedata.normalize("NFC", d), d)
        if nfc != d:
            raise DataError(f"{key}: {base}: class folders {nfc!r} and {d!r} spell the same name in two "
                            f"Unicode forms; merge them into one folder")


def check_distinct_splits(train: Path, test: Path, key: str) -> None:
    """A test split read from the training file itself would score the model on what it learned from: refused,
    naming the test split's key. (A copy of the file is left alone: a smoke test may mean it.)"""
    try:
        same = train.samefile(test)
    except OSError:
        return  # a missing or unreadable file is reported where it is read
    if same:
        raise DataError(f"{key}: {test} is the training file; the test split must hold other samples")


def list_class_folders(root: Path, extensions: list[str], key: str) -> tuple[list[Path], list[str], np.ndarray | None]:
    """(files, class name per file, split per file or None) of `root/<class>/*` or
    `root/{train,test}/<class>/*`; files sorted, hidden entries and other extensions skipped."""
    if not root.is_dir():
        raise DataError(f"{key}: folder not found: {root}")
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    subdirs = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    layouts = [(root / s, s) for s in SPLIT_NAMES] if set(SPLIT_NAMES) <= subdirs else [(root, None)]
    _check_layout(root, subdirs, split=layouts[0][1] is not None, key=key)
    files: list[Path] = []
    classes: list[str] = []
    splits: list[str] = []
    for base, split in layouts:
        class_dirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise DataError(f"{key}: {base} has no class sub-folders (expected {base}/<class>/<file>)")
        _check_one_folder_per_name(base, class_dirs, key)
        for d in class_dirs:
            found = sorted(p for p in d.rglob("*") if p.suffix.lower() in exts and (p.is_file() or p.is_symlink())
                           and not any(part.startswith(".") for part in p.relative_to(d).parts))
            broken = next((p for p in found if not p.exists()), None)
            if broken is not None:
                raise DataError(f"{key}: {broken} is a link to a file that does not exist ({os.readlink(broken)})")
            if not found:
                raise DataError(f"{key}: class folder {d} has no files with extension {', '.join(sorted(exts))}")
            files += found
            classes += [unicodedata.normalize("NFC", d.name)] * len(found)
            splits += [split or ""] * len(found)
    check_class_names(sorted(set(classes)), f"{key}: {root}")  # over train/ and test/ together
    return files, classes, (np.array(splits) if layouts[0][1] is not None else None)


def read_index(path: Path, key: str) -> tuple[list[Path], list[str], np.ndarray | None]:
    """A CSV with columns `path,label[,split]`; paths relative to the CSV's folder."""
    if path.is_dir():
        raise DataError(f"{key}: {path} is a folder; give the index CSV's path")
    if not path.is_file():
        raise DataError(f"{key}: file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header, rows = reader.fieldnames or [], list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{key}: {path}: not a readable CSV ({err})") from None
    if not {"path", "label"} <= set(header):
        raise DataError(f"{key}: {path} needs a header with columns path,label (optionally split)")
    if not rows:
        raise DataError(f"{key}: {path} lists no files (a header and no rows)")
    files, classes, splits = [], [], []
    row_of: dict[Path, int] = {}
    for i, row in enumerate(rows):
        if any((v or "").strip() for v in row.get(None, ())):  # DictReader keeps fields beyond the header under None
            raise DataError(f"{key}: {path}: row {i + 2} has more fields than the header's {len(header)}")
        rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not rel or not label:
            raise DataError(f"{key}: {path}: row {i + 2} has an empty path or label")
        f = (path.parent / rel).expanduser()
        if not f.is_file():
            raise DataError(f"{key}: {path}: row {i + 2}: file not found: {f}")
        first = row_of.setdefault(f.resolve(), i + 2)
        if first != i + 2:
            raise DataError(f"{key}: {path}: row {i + 2} lists {rel} again (first in row {first}); each file is one sample")
        files.append(f)
        classes.append(label)
        splits.append((row.get("split") or "").strip())
    if any(splits):
        bad = [s for s in splits if s not in SPLIT_NAMES]
        if bad:
            raise DataError(f"{key}: {path}: split must be train or test in every row, got '{bad[0]}'")
        return files, classes, np.array(splits)
    return files, classes, None


def split_pool(pool: Pool, test_fraction: float, seed: int, key: str = "") -> SourceData:
    """The pool's own split where it has one, else a class-stratified one; then text is tokenized and
    standardized modalities scaled, both fitted on the training split only."""
    if len(pool) == 0:
        raise DataError(f"{pool.where}: no samples")
    if pool.split is not None:
        tr, te = np.flatnonzero(pool.split == "train"), np.flatnonzero(pool.split == "test")
    else:
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"{key}test_fraction: must lie in (0, 1), got {test_fraction}")
        tr, te = stratified_split(pool.labels, test_fraction, seed)
    for idx, name in ((tr, "train"), (te, "test")):
        if len(idx) == 0:
            raise DataError(f"{pool.where}: the {name} split is empty")
    unseen = sorted(set(np.unique(pool.labels[te]).tolist()) - set(np.unique(pool.labels[tr]).tolist()))
    if unseen:
        names = [pool.class_names.get(c, str(c)) for c in unseen]
        raise DataError(f"{pool.where}: classes {names} occur in the test split only; a class must be trainable")
    train_in, test_in, specs, preparation = {}, {}, dict(pool.modalities), {}
    for m, arr in pool.inputs.items():
        a, b = arr[tr], arr[te]
        if arr.dtype == object:
            a, b, vocab = tokenize(a, b, pool.tokenizers.get(m, TokenizerParams()), f"{key}tokenizer.")
            specs[m] = ModalitySpec("text", (a.shape[1],), "int64", vocab)
        elif m in pool.scale:
            a, b = scale(a, pool.scale[m]), scale(b, pool.scale[m])
            preparation[m] = {"scale": pool.scale[m]}
        if m in pool.standardize:
            mean, std = standardization(a)
            a, b = standardize(a, mean, std), standardize(b, mean, std)
            preparation[m] = {**preparation.get(m, {}), "mean": mean.reshape(-1).tolist(), "std": std.reshape(-1).tolist()}
        train_in[m], test_in[m] = a, b
    return SourceData(Split(train_in, pool.labels[tr]), Split(test_in, pool.labels[te]), specs,
                      class_names=dict(pool.class_names), preparation=preparation)


def scale(x: np.ndarray, factor: float) -> np.ndarray:
    """Stored values (e.g. uint8 pixels) as float32 times `factor`."""
    return x.astype(np.float32) * factor


def standardization(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training split's mean and std of each feature (axis 1; over time too for [N, C, L]), float64."""
    axes = (0, *range(2, train.ndim))
    mean = train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = train.std(axis=axes, keepdims=True, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return mean, std


def standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std per feature (axis 1), as float32; `mean` and `std` from `standardization`, or flat lists."""
    shape = (1, -1, *([1] * (x.ndim - 2)))
    return ((x - np.asarray(mean, dtype=np.float64).reshape(shape)) / np.asarray(std, dtype=np.float64).reshape(shape)).astype(np.float32)


def stems(files: list[Path]) -> np.ndarray:
    return np.array([f.stem for f in files])


def cached_decode(kind: str, key: dict[str, Any], enabled: bool, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Decoded arrays from the on-disk cache (`scenarios.cache`), keyed by `kind` and `key` (file
    fingerprints plus the preprocessing), else built and stored."""
    from scenarios.cache import ArrayCache

    return ArrayCache("decoded", enabled).load_or_build({"kind": kind, "format": DECODE_FORMAT, **key}, build, prefix=f"{kind}-")


DECODE_FORMAT = 1  # bump when decoding changes, so older cache entries are not read
