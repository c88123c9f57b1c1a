"""The run checkpoint written after every experience: the model's structure and weights, the stream
position, everything measured so far, the random-number states and a fingerprint of each data file, so
a killed run resumes exactly, and only on the data it started with.

A checkpoint holds tensors and plain data only (dicts, lists, tuples, strings, numbers, None) and is read
with `torch.load(..., weights_only=True)`: a checkpoint someone sent you cannot run code when resumed."""

from __future__ import annotations

import dataclasses
import enum
import io
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong_moe.errors import ConfigError
from lifelong_moe.reporting.files import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"
FORMAT = 4  # 1: pickled numpy objects (refused); 2: tensors and plain data, the model before the gate refactor;
# 3: float64 square covariances; 4: now (covariances packed: statistics/compact_scatter.py)
_FIELDS: dict[str, tuple[type, ...]] = {
    "config": (dict,), "completed": (int,), "structure": (dict,), "model": (dict,), "R": (list,),
    "b": (list, type(None)), "timing": (list,), "params": (list,), "reports": (list,), "modality": (list,),
    "elapsed_s": (float, int), "rng": (dict,), "data_files": (dict,),
}


def rng_state() -> dict[str, Any]:
    """Every random-number state a run draws from, as tensors and plain data."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": str(name), "key": [int(k) for k in key], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["bit_generator"], np.asarray(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain(obj: Any) -> Any:
    """`obj` as tensors and plain data: numpy scalars and arrays become numbers and lists, dataclasses
    dicts, enums their values, sets sorted lists, other keys and objects their text."""
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.generic):  # before the subclass checks below: np.float64 is a float
        return obj.item()
    if isinstance(obj, dict):
        return {k if type(k) in (str, int) else str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, enum.Enum):
        return plain(obj.value)
    for base in (int, float, str):  # subclasses of the plain types (enums are handled above)
        if isinstance(obj, base):
            return base(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(dataclasses.asdict(obj))
    if isinstance(obj, (set, frozenset)):
        return sorted((plain(v) for v in obj), key=repr)
    return str(obj)


def save_checkpoint(run_dir: Path, payload: dict[str, Any]) -> None:
    """Atomically replace `run_dir/checkpoint.pt`: a crash leaves the previous checkpoint intact."""
    buf = io.BytesIO()
    # the state dict goes as it is (an OrderedDict of tensors, with its version metadata)
    torch.save({"format": FORMAT, **{k: v if k == "model" else plain(v) for k, v in payload.items()}}, buf)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, buf.getvalue())


def checkpoint_identity(run_dir: str | Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of the run's checkpoint, None without one: every save renames a new file over
    it, so another process's write changes this even within the same second."""
    try:
        st = os.stat(Path(run_dir) / CHECKPOINT)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The checkpoint of the run in `run_dir`, checked for every field a resume reads. Loaded with
    weights_only=True: a pickle that names any other object is refused before anything in it runs."""
    where = Path(run_dir)
    if not str(run_dir).strip():
        raise ConfigError("--resume: the run directory is empty")
    if not where.is_dir():
        raise ConfigError(f"--resume: no run directory at {run_dir}")
    path = where / CHECKPOINT
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise ConfigError(f"--resume: {path} is not a file")
    if not path.is_file():
        raise ConfigError(f"--resume: {path} not found (the run finished no experience, or is not a lifelong-moe run)")
    if not zipfile.is_zipfile(path):  # what torch.save writes; anything else is not ours
        raise ConfigError(f"--resume: {path} is unreadable (not a checkpoint written by torch.save)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            f"--resume: {path} was refused: it holds objects other than tensors and plain data (a checkpoint of an "
            f"older lifelong-moe, format 1, or not a lifelong-moe checkpoint); nothing in it was run") from None
    except MemoryError:
        raise ConfigError(f"--resume: {path} is unreadable (it declares more data than fits in memory)") from None
    except Exception as err:  # truncated, not a zip archive, foreign format: all unreadable
        raise ConfigError(f"--resume: {path} is unreadable ({type(err).__name__}: {_short(err)})") from None
    check_payload(payload, path)
    return payload


def check_payload(payload: Any, path: Path) -> None:
    """Refuse a checkpoint whose fields are missing or of the wrong kind, naming the field."""
    if not isinstance(payload, dict) or "format" not in payload:
        raise ConfigError(f"--resume: {path} is not a lifelong-moe checkpoint")
    if payload["format"] != FORMAT:
        raise ConfigError(f"--resume: {path} is a checkpoint of format {payload['format']!r}; this lifelong-moe reads format {FORMAT}")
    for name, kinds in _FIELDS.items():
        if name not in payload:
            raise ConfigError(f"--resume: {path} is not a complete lifelong-moe checkpoint (no '{name}')")
        value = payload[name]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise ConfigError(f"--resume: {path} has a malformed '{name}' ({type(value).__name__})")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["model"].items()):
        raise ConfigError(f"--resume: {path} has a malformed 'model' (not a mapping of names to tensors)")
    if payload["completed"] < 1:
        raise ConfigError(f"--resume: {path} records {payload['completed']} completed experiences")


def fingerprint_changes(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first data file (or source's arrays, or encoder's weights) whose size or content differs
    between the checkpoint and now, as a message."""
    for source, files in saved.items():
        now = {f.get("param"): f for f in current.get(source, [])}
        for old in files if isinstance(files, list) else []:
            if not isinstance(old, dict):
                continue
            param = str(old.get("param"))
            new = now.get(param)
            if param == "(arrays)":  # a source without one data file: its arrays were fingerprinted
                key, what = f"stream.sources.{source}", "its data"
            else:  # a file param of the source, or a pretrained encoder's weights applied to it
                key = param if param.startswith("pretrained.") else f"stream.sources.{source}.params.{param}"
                what = new.get("path") if new is not None else None
            if new is None:
                return f"{key}: the checkpoint read {old.get('path') or 'data'}, which this config no longer reads"
            if (new.get("size"), new.get("sha256")) != (old.get("size"), old.get("sha256")):
                return (f"{key}: {what} changed since the checkpoint was written ({old.get('size')} -> "
                        f"{new.get('size')} bytes, sha256 {str(old.get('sha256'))[:12]} -> {str(new.get('sha256'))[:12]}); "
                        f"resuming would mix results on old and new data; start a new run")
    return None


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The first key path where two config containers differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                return where
            found = first_difference(a[key], b[key], where)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{prefix}[{i}]")
            if found:
                return found
        return None
    return None if a == b else (prefix or "config")
