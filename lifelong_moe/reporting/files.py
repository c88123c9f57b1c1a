"""Run directories and atomic writes: a crash never leaves a half-written results file."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lifelong_moe.errors import ConfigError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def new_run_dir(root: str | Path, experiment: str, version: str | None) -> tuple[Path, str]:
    """Create `root/experiment/version` (the next free `version_N` by default); never reuse a non-empty one."""
    base = Path(root) / experiment
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output.root: cannot create {base}: {err.strerror}") from None
    if not os.access(base, os.W_OK):
        raise ConfigError(f"output.root: {base} is not writable")
    if version is None:
        taken = [int(m.group(1)) for p in base.iterdir() if (m := re.fullmatch(r"version_(\d+)", p.name))]
        version = f"version_{max(taken, default=-1) + 1}"
    run_dir = base / version
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"output.version: {run_dir} already holds a run; choose another version or remove it")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, version
