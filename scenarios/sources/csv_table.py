"""Your table: a CSV with a label column, numeric columns (one `tabular` modality [D], standardized by
the training split) and text columns (each its own `text` modality of token ids).

One file split by `test_fraction` (or by a `split` column of train/test), or separate `path` and
`test_path` files. Numeric columns are every column that is not the label, id, split, text or ignored
one, unless `numeric` lists them; a column that is neither numeric nor listed is an error."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenarios.errors import DataError
from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData
from scenarios.sources.files import POOLS, Pool, check_distinct_splits, label_array, split_pool
from scenarios.sources.tokenize import TokenizerParams


@dataclass
class CsvParams:
    path: str = "???"  # the CSV (the training split when test_path is given)
    test_path: str | None = None  # a second CSV holding the test split (same columns)
    label: str = "label"  # class names or non-negative integers
    numeric: list[str] = field(default_factory=list)  # empty: every remaining column (must all be numbers)
    text: list[str] = field(default_factory=list)  # each becomes a text modality named after its column
    ignore: list[str] = field(default_factory=list)  # columns left out
    id_column: str | None = None  # per-row id, for pairing with other sources
    split_column: str | None = None  # a column of train/test
    tabular_name: str = "tabular"  # the numeric modality's name
    standardize: bool = True  # scale numeric columns by the training split's mean and std
    tokenizer: TokenizerParams = field(default_factory=TokenizerParams)  # how text columns become token ids
    delimiter: str = ","  # the field separator
    test_fraction: float = 0.2  # when neither test_path nor split_column splits the rows


def _numbers(rows: list[dict[str, str]], columns: list[str], at: Callable[[int], str], listed: bool) -> np.ndarray:
    """The numeric columns as float32 (rows, columns); a cell that is not a finite number is refused, naming it
    (`at(i)`: the file and row). A value beyond float32 becomes inf and is refused with the rest, without the
    overflow warning numpy would print."""
    values = np.empty((len(rows), len(columns)), dtype=np.float32)
    with np.errstate(over="ignore"):
        for i, row in enumerate(rows):
            for j, col in enumerate(columns):
                cell = row[col].strip()
                try:
                    values[i, j] = float(cell)
                except ValueError:
                    hint = "" if listed else "; list text columns in `text` or drop them with `ignore`"
                    raise DataError(f"path: {at(i)}, column '{col}': not a number ('{cell[:40]}'){hint}") from None
                if not np.isfinite(values[i, j]):
                    raise DataError(f"path: {at(i)}, column '{col}': not a finite number ('{cell[:40]}')")
    return values


def _read(path_str: str, key: str, delimiter: str) -> tuple[Path, list[str], list[dict[str, str]]]:
    path = Path(path_str).expanduser()
    if path.is_dir():
        raise DataError(f"{key}: {path} is a folder; give the CSV file's path")
    if not path.is_file():
        raise DataError(f"{key}: file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = list(reader.fieldnames or [])
            _check_header(header, path, key)  # before the rows: a dict per row keeps one of two equal names
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{key}: {path}: not a readable CSV ({type(err).__name__}: {err})") from None
    if not rows:
        raise DataError(f"{key}: {path}: no rows below the header")
    for i, row in enumerate(rows):
        if None in row:
            raise DataError(f"{key}: {path}: row {i + 2} has more fields than the header ({len(header)})")
        if any(v is None for v in row.values()):
            raise DataError(f"{key}: {path}: row {i + 2} has fewer fields than the header ({len(header)})")
    return path, header, rows


def _check_header(header: list[str], path: Path, key: str) -> None:
    first: dict[str, tuple[str, int]] = {}  # each name without its spaces -> the column that first spelled it, and where
    for i, name in enumerate(header):
        if not name.strip():
            raise DataError(f"{key}: {path}: column {i + 1} of the header has no name")
        twin, at = first.setdefault(name.strip(), (name, i))
        if twin != name:
            raise DataError(f"{key}: {path}: columns '{twin}' and '{name}' differ only in spaces; give each column its own name")
        if at != i:
            raise DataError(f"{key}: {path}: column '{name}' appears twice in the header (columns {at + 1} "
                            f"and {i + 1}); give each column its own name")


def _check_roles(params: CsvParams) -> None:
    """Each column plays one part: the label, the id, the split, a numeric or text input, or ignored. A label
    column among the inputs would hand the model its answers."""
    single = {"label": "the label column", "id_column": "the id column", "split_column": "the split column"}
    parts: dict[str, str] = {}
    for key, columns in (("label", [params.label]), ("id_column", [params.id_column]), ("split_column", [params.split_column]),
                         ("numeric", params.numeric), ("text", params.text), ("ignore", params.ignore)):
        for col in (c for c in columns if c is not None):
            if key == "ignore" and parts.get(col) in ("id_column", "split_column"):
                continue  # redundant, and harmless: neither is an input
            if col in parts:
                what = "listed twice" if parts[col] == key else single.get(parts[col], f"also in {parts[col]}")
                raise DataError(f"{key}: column '{col}' is {what}; each column plays one part")
            parts[col] = key


def check_delimiter(delimiter: str) -> None:
    if len(delimiter) != 1 or delimiter in "\"\r\n":
        raise DataError(f"delimiter: must be one character other than a quote or a line break, got {delimiter!r}")


def csv_pool(params: CsvParams, seed: int) -> Pool:
    check_delimiter(params.delimiter)
    _check_roles(params)
    files = [("path", params.path)] + ([("test_path", params.test_path)] if params.test_path else [])
    tables = [_read(p, k, params.delimiter) for k, p in files]
    if params.test_path:
        check_distinct_splits(tables[0][0], tables[1][0], "test_path")
    header = tables[0][1]
    for (key, _), (path, other, _) in zip(files[1:], tables[1:]):
        if other != header:
            raise DataError(f"{key}: {path}: columns {other} differ from {tables[0][0]}'s {header}")
    where = f"path: {tables[0][0]}"
    special = [c for c in (params.label, params.id_column, params.split_column) if c]
    for col in [*special, *params.text, *params.numeric, *params.ignore]:
        if col not in header:
            raise DataError(f"{where}: no column '{col}' (columns: {', '.join(header)})")
    rows = [r for _, _, t in tables for r in t]
    sources = [(path, i + 2) for path, _, t in tables for i in range(len(t))]
    numeric = list(params.numeric) or [c for c in header if c not in {*special, *params.text, *params.ignore}]

    def at(i: int) -> str:
        return f"{sources[i][0]}: row {sources[i][1]}"

    if numeric and params.tabular_name in params.text:
        raise DataError(f"tabular_name: '{params.tabular_name}' also names a text column; each modality needs its own name")
    inputs: dict[str, np.ndarray] = {}
    specs: dict[str, ModalitySpec] = {}
    if numeric:
        inputs[params.tabular_name] = _numbers(rows, numeric, at, listed=bool(params.numeric))
        specs[params.tabular_name] = ModalitySpec("tabular", (len(numeric),))
    for col in params.text:
        inputs[col] = np.array([row[col] for row in rows], dtype=object)
        specs[col] = ModalitySpec("text", (params.tokenizer.max_length,), "int64")
    if not inputs:
        raise DataError(f"{where}: no numeric or text columns besides the label")
    labels, names = label_array([row[params.label] for row in rows], "path", at=lambda i: f"{at(i)}, column '{params.label}'")
    ids = np.array([row[params.id_column].strip() for row in rows]) if params.id_column else np.array([str(i) for i in range(len(rows))])
    split = None
    if params.test_path:
        split = np.array(["train"] * len(tables[0][2]) + ["test"] * len(tables[1][2]))
    elif params.split_column:
        split = np.array([row[params.split_column].strip() for row in rows])
        bad = np.flatnonzero(~np.isin(split, ["train", "test"]))
        if len(bad):
            raise DataError(f"path: {at(int(bad[0]))}, column '{params.split_column}': expected train or test, got '{split[bad[0]]}'")
    scaled = (params.tabular_name,) if numeric and params.standardize else ()
    return Pool(inputs, labels, ids, split, specs, names, where, tokenizers={c: params.tokenizer for c in params.text},
                standardize=scaled)


POOLS["csv"] = csv_pool


@SOURCES.register("csv", params=CsvParams)
def csv_source(params: CsvParams, seed: int) -> SourceData:
    """Your table: numeric columns -> `tabular`, text columns -> `text` modalities, one label column."""
    return split_pool(csv_pool(params, seed), params.test_fraction, seed)
