"""A Hugging Face `datasets` dataset saved with `save_to_disk` (a Dataset, or a DatasetDict with train
and test splits), with a mapping from modality names to columns and their kinds:

    columns: {image: {column: img, kind: image}, audio: {column: speech, kind: audio},
              caption: {column: text, kind: text}, stats: {column: measurements, kind: tabular}}

Image and audio columns are decoded from their stored bytes with Pillow and soundfile (never through
`datasets`' own decoders), with the same settings as `image_folder` and `audio_folder`, and cached.
Read offline with `load_from_disk`; nothing is downloaded."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.cache import files_fingerprint
from scenarios.errors import DataError
from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData
from scenarios.sources.decode import (
    AudioPrep,
    ImagePrep,
    audio_features,
    audio_shape,
    check_audio_prep,
    check_image_prep,
    check_workers,
    decode_audio,
    decode_image,
    image_shape,
    parallel_map,
)
from scenarios.sources.files import POOLS, Pool, cached_decode, label_array, split_pool
from scenarios.sources.tokenize import TokenizerParams

COLUMN_KINDS = ("image", "audio", "text", "tabular")


@dataclass
class HFColumn:
    column: str = "???"
    kind: str = "???"  # image | audio | text | tabular


@dataclass
class HFDatasetParams:
    path: str = "???"  # the folder written by save_to_disk
    columns: dict[str, HFColumn] = field(default_factory=dict)  # modality name -> column and kind
    label: str = "label"  # a ClassLabel, integer or string column
    train_split: str = "train"  # DatasetDict splits; a plain Dataset is split by test_fraction
    test_split: str = "test"  # the DatasetDict split tested on
    id_column: str | None = None  # per-row id, for pairing with other sources
    image: ImagePrep = field(default_factory=ImagePrep)  # how image columns are decoded
    audio: AudioPrep = field(default_factory=AudioPrep)  # how audio columns are decoded
    audio_standardize: bool = True  # log-mel: scale each mel band by the training split's mean and std
    tokenizer: TokenizerParams = field(default_factory=TokenizerParams)  # how text columns become token ids
    test_fraction: float = 0.2  # a plain Dataset (no splits) is split this way, per class
    cache: bool = True  # keep decoded images and audio on disk
    workers: int = 0  # decoding threads; 0: up to 8


def _load(path: Path) -> Any:
    from scenarios.offline import hf_offline

    hf_offline()
    if not path.is_dir():
        raise DataError(f"path: folder not found: {path}")
    _check_saved(path)
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        return datasets.load_from_disk(str(path.resolve()))  # absolute: never read as a URL
    except Exception as err:  # datasets, fsspec and pyarrow each fail their own way on a damaged folder
        raise DataError(f"path: {path}: not a dataset saved with save_to_disk ({type(err).__name__}: {_first(err)})") from None


def _json(path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read(16 * 2**20))
    except (OSError, ValueError, RecursionError) as err:
        raise DataError(f"path: {path}: not readable JSON ({type(err).__name__}: {_first(err)})") from None


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _check_saved(path: Path) -> None:
    """What load_from_disk will open, checked before it does: each split of a DatasetDict a sub-folder,
    and each data file a state.json names a file inside its folder (`../x.arrow` or `/x.arrow` there
    would have any file on the machine read as the dataset)."""
    root = path.resolve()
    folders = [path]
    if (path / "dataset_dict.json").is_file():
        meta = _json(path / "dataset_dict.json")
        splits = meta.get("splits") if isinstance(meta, dict) else None
        if not isinstance(splits, list):
            raise DataError(f"path: {path / 'dataset_dict.json'}: no list of 'splits'")
        for split in splits:
            if not _plain_name(split):
                raise DataError(f"path: {path / 'dataset_dict.json'}: split {split!r} is not the name of a folder inside {path}")
        folders = [path / split for split in splits]
    for folder in folders:
        state_path = folder / "state.json"
        if not state_path.is_file():
            continue  # load_from_disk names what is missing
        state = _json(state_path)
        entries = state.get("_data_files") if isinstance(state, dict) else None
        if not isinstance(entries, list):
            raise DataError(f"path: {state_path}: no list of '_data_files'")
        if not entries:  # what save_to_disk writes for a dataset of no rows (load_from_disk then fails obscurely)
            raise DataError(f"path: {folder}: an empty dataset (its state.json lists no data file)")
        for entry in entries:
            name = entry.get("filename") if isinstance(entry, dict) else None
            target = (folder / name).resolve() if _plain_name(name) else None
            if target is None or not target.is_relative_to(root) or not target.is_file():
                raise DataError(f"path: {state_path}: data file {name!r} is not a file inside {path}; a saved dataset "
                                f"reads its own files only")


def _first(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def hf_pool(params: HFDatasetParams, seed: int) -> Pool:
    path = Path(params.path).expanduser()
    loaded = _load(path)
    try:
        return _pool(params, path, loaded)
    except DataError:
        raise
    except Exception as err:  # pyarrow errors on data that load_from_disk mapped but cannot read
        raise DataError(f"path: {path}: cannot read the saved dataset ({type(err).__name__}: {_first(err)})") from None


def _pool(params: HFDatasetParams, path: Path, loaded: Any) -> Pool:
    import datasets

    where = f"path: {path}"
    check_workers(params.workers)
    if not params.columns:
        raise DataError("columns: map at least one modality to a column, e.g. {image: {column: img, kind: image}}")
    for key, col in [*((f"columns.{m}.column", c.column) for m, c in params.columns.items()), ("id_column", params.id_column)]:
        if col == params.label:  # an input made of the label would hand the model its answers
            raise DataError(f"{key}: column '{col}' is the label column; each column plays one part")
    if isinstance(loaded, datasets.DatasetDict):
        if params.train_split not in loaded:
            raise DataError(f"train_split: {path} has no split '{params.train_split}' (has {', '.join(loaded)})")
        parts = [(params.train_split, "train")]
        if params.test_split in loaded:
            parts.append((params.test_split, "test"))
        elif len(loaded) > 1:  # a split left unread would be silently dropped
            other = sorted(set(loaded) - {params.train_split})
            raise DataError(f"test_split: {path} has no split '{params.test_split}' but has {', '.join(other)}; set test_split "
                            f"to the one to test on")
        ds = datasets.concatenate_datasets([loaded[name] for name, _ in parts])
        split = np.concatenate([np.full(len(loaded[name]), role) for name, role in parts]) if len(parts) == 2 else None
    else:
        ds, split = loaded, None
    for col in [params.label, *(c.column for c in params.columns.values()), *([params.id_column] if params.id_column else [])]:
        if col not in ds.column_names:
            raise DataError(f"{where}: no column '{col}' (columns: {', '.join(ds.column_names)})")
    if len(ds) == 0:
        raise DataError(f"{where}: no rows")
    check_image_prep(params.image, "image.")
    check_audio_prep(params.audio, "audio.")

    feature = ds.features[params.label]
    if isinstance(feature, datasets.ClassLabel):
        labels = np.asarray(ds[params.label], dtype=np.int64)
        names = {i: n for i, n in enumerate(feature.names)}
        if labels.min() < 0:
            raise DataError(f"{where}: sample {int(np.argmin(labels))} has no label (-1)")
    elif not isinstance(feature, datasets.Value):  # an Image, Audio or a sequence: every sample its own "class"
        raise DataError(f"label: column '{params.label}' holds {type(feature).__name__} values, not class names or numbers")
    else:
        labels, names = label_array(list(ds[params.label]), f"{where}, column '{params.label}'")

    inputs: dict[str, np.ndarray] = {}
    specs: dict[str, ModalitySpec] = {}
    media = {m: c for m, c in params.columns.items() if c.kind in ("image", "audio")}
    for modality, col in params.columns.items():
        if col.kind not in COLUMN_KINDS:
            raise DataError(f"columns.{modality}.kind: unknown '{col.kind}'; use {', '.join(COLUMN_KINDS)}")
        if col.kind == "text":
            inputs[modality] = _texts(ds, col.column, f"columns.{modality}.column")
            specs[modality] = ModalitySpec("text", (params.tokenizer.max_length,), "int64")
        elif col.kind == "tabular":
            inputs[modality] = _numeric(ds, col.column, where)
            specs[modality] = ModalitySpec("tabular", inputs[modality].shape[1:])
        elif col.kind == "image":
            specs[modality] = ModalitySpec("image", image_shape(params.image))
        else:
            specs[modality] = ModalitySpec("signal", audio_shape(params.audio))

    def decode() -> dict[str, np.ndarray]:
        return {m: _decode_media(ds, c, params, where, path) for m, c in media.items()}

    if media:
        key = {"files": files_fingerprint(sorted(p for p in path.rglob("*") if p.is_file()), path),
               "columns": {m: asdict(c) for m, c in media.items()}, "image": asdict(params.image), "audio": asdict(params.audio)}
        inputs.update(cached_decode("hf_dataset", key, params.cache, decode))
    ids = np.array([str(v) for v in ds[params.id_column]]) if params.id_column else np.array([str(i) for i in range(len(ds))])
    scale = {m: 1.0 / 255.0 for m, c in media.items() if c.kind == "image"}
    standardize = tuple(m for m, c in media.items() if c.kind == "audio" and params.audio_standardize and params.audio.features == "logmel")
    tokenizers = {m: params.tokenizer for m, c in params.columns.items() if c.kind == "text"}
    return Pool(inputs, labels, ids, split, specs, names, where, tokenizers=tokenizers, standardize=standardize, scale=scale)


def _texts(ds: Any, column: str, key: str) -> np.ndarray:
    """A text column as strings (numbers and dates as written); a missing value (None, NaN) is empty text, as an
    empty CSV cell is. Structured values (an image, its dict of bytes, a list) are refused: their repr would
    become the tokens."""
    values = ds[column]
    for i, v in enumerate(values):
        if isinstance(v, (dict, list, tuple, bytes, bytearray)) or type(v).__module__.startswith("PIL"):
            raise DataError(f"{key}: column '{column}' holds {type(v).__name__} values (sample {i}), not text")
    missing = lambda v: v is None or (isinstance(v, float) and v != v)  # noqa: E731
    return np.array(["" if missing(v) else str(v) for v in values], dtype=object)


def _numeric(ds: Any, column: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(ds.with_format("numpy")[column], dtype=np.float32)
    except (ValueError, TypeError) as err:
        raise DataError(f"{where}, column '{column}': not numbers of one length per row ({err})") from None
    arr = arr.reshape(len(arr), -1)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DataError(f"{where}, column '{column}': sample {int(np.flatnonzero(bad)[0])} is NaN or infinite")
    return arr


def _decode_media(ds: Any, col: HFColumn, params: HFDatasetParams, where: str, root: Path) -> np.ndarray:
    """Decode an image or audio column from its stored bytes, never through `datasets`' own decoders (its
    Audio decoding needs torchcodec). The column may be a datasets.Image / Audio feature, a struct with
    `bytes` (and `path`), or a binary Value holding each file's bytes: what `Value("binary")` writes
    without torchcodec. A stored path (no bytes) must lie inside the dataset's folder."""
    import datasets

    feature = ds.features[col.column]
    expected = datasets.Image if col.kind == "image" else datasets.Audio
    if isinstance(feature, expected):
        values = list(ds.cast_column(col.column, expected(decode=False))[col.column])
    elif (isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary")) or \
            (isinstance(feature, dict) and "bytes" in feature):
        values = list(ds[col.column])
    else:
        raise DataError(f"{where}, column '{col.column}': expected a datasets.{expected.__name__} column, a struct with "
                        f"'bytes', or Value('binary') holding each file's bytes; got {feature}")

    def one(i: int) -> np.ndarray:
        value = values[i]
        name = f"{where}, column '{col.column}', sample {i}"
        if isinstance(value, dict) and value.get("array") is not None:  # an already decoded waveform
            return audio_features(np.asarray(value["array"]), int(value["sampling_rate"]), params.audio, name)
        src = value if isinstance(value, bytes) else value.get("bytes") if isinstance(value, dict) else None
        if src is None and isinstance(value, dict) and value.get("path"):
            src = _inside(root, value["path"], name)
        if src is None:
            raise DataError(f"{name}: no bytes or path stored")
        return decode_image(src, params.image, name) if col.kind == "image" else decode_audio(src, params.audio, name)

    return np.stack(parallel_map(one, list(range(len(values))), params.workers))


def _inside(root: Path, stored: str, name: str) -> Path:
    target = (root / stored).resolve()  # relative paths are the dataset folder's; absolute ones stay absolute
    if not target.is_relative_to(root.resolve()) or not target.is_file():
        raise DataError(f"{name}: its bytes are not stored, and its path '{stored}' is not a file inside {root}; save "
                        f"the dataset with the files' bytes in it")
    return target


POOLS["hf_dataset"] = hf_pool


@SOURCES.register("hf_dataset", params=HFDatasetParams)
def hf_dataset_source(params: HFDatasetParams, seed: int) -> SourceData:
    """A Hugging Face dataset saved with save_to_disk; columns mapped to image, audio, text, tabular."""
    return split_pool(hf_pool(params, seed), params.test_fraction, seed)
