"""An on-disk cache of arrays keyed by a fingerprint, so decoding (images, audio) and frozen-encoder
features are computed once and read by every later run, method, seed and `compare`.

Entries are `.npz` files named by the SHA-256 of a JSON key. A writer saves to a temporary file in the
same folder and renames it over the entry, so concurrent runs never see a half-written entry (two runs
that miss at once both compute and the last rename wins, with identical content). The key is stored
inside the entry and compared on read; an unreadable or mismatched entry counts as a miss.

The cache lives under `$LIFELONG_MOE_CACHE`, else `$XDG_CACHE_HOME/lifelong_moe`, else
`~/.cache/lifelong_moe`."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "LIFELONG_MOE_CACHE"
_KEY_ARRAY = "__cache_key__"
_SHARED: list[dict[Any, Any]] = []  # while `shared_in_process` is open: what this process has read or built


@contextmanager
def shared_in_process() -> Iterator[None]:
    """Within the block, sources loaded and arrays read or built (decoded files, pretrained features) are kept
    in memory and handed to whoever asks again, so several runs in one process (a comparison's methods and
    seeds) read and decode each source once and see the very same data. Entries of `cache: false` are shared
    too (the setting keeps them off the disk). Nested blocks share the outer one's memory."""
    if _SHARED:
        yield
        return
    _SHARED.append({})
    try:
        yield
    finally:
        _SHARED.clear()


def shared_memory() -> dict[Any, Any] | None:
    """The open `shared_in_process` block's memory, or None."""
    return _SHARED[0] if _SHARED else None


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc), else set and restored."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lifelong_moe"


def digest(obj: Any) -> str:
    """SHA-256 of a JSON-serialisable object (keys sorted), as hex."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def files_fingerprint(paths: Iterable[Path], root: Path | None = None) -> list[tuple[str, int, str]]:
    """(path, size, SHA-256 of the content) of each file: a changed, added or removed file changes it,
    also one rewritten with its old size and modification time (a key of sizes and mtimes would then
    serve stale arrays). Within a process each file is hashed once (`content_hash`)."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((str(p.relative_to(root)) if root is not None else str(p), st.st_size, content_hash(p, st)))
    return out


def array_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of arrays (hashlib releases the GIL; ~1 GB/s)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


_FILE_HASHES: dict[tuple[str, int, int, int, int], str] = {}


def content_hash(path: Path, st: os.stat_result | None = None) -> str:
    """SHA-256 of a file's bytes. Memoised per process by path, inode, size, mtime and ctime: rewriting a
    file changes its ctime even when its mtime is put back, so the memo never serves an old hash."""
    st = st or os.stat(path)
    memo = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if memo not in _FILE_HASHES:
        fh = hashlib.sha256()
        fd = os.open(path, os.O_RDONLY)  # os.read: a small file costs one call, not a buffered file object
        try:
            while block := os.read(fd, 1 << 24):
                fh.update(block)
        finally:
            os.close(fd)
        _FILE_HASHES[memo] = fh.hexdigest()
    return _FILE_HASHES[memo]


def digest_files(files: list[Path], root: Path | None) -> str:
    """One SHA-256 over files' names (relative to `root`, else their own) and contents."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root) if root is not None else f.name}|{content_hash(f)}|".encode())
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (of every file under it, for a directory)."""
    path = Path(path)
    if path.is_dir():
        return digest_files(sorted(p for p in path.rglob("*") if p.is_file()), path)
    return digest_files([path], None)


class ArrayCache:
    """`load_or_build(key, build)`: the arrays stored under `key`, else `build()`'s, stored for next time."""

    def __init__(self, folder: str, enabled: bool = True) -> None:
        self.folder = cache_root() / folder
        self.enabled = enabled
        self.last_hit = False  # whether the latest load_or_build read from disk

    def path(self, key: Any, prefix: str = "") -> Path:
        return self.folder / f"{prefix}{digest(key)[:40]}.npz"

    def _memory_key(self, key: Any, prefix: str) -> tuple[str, str]:
        return (str(self.folder), f"{prefix}{digest(key)}")

    def load(self, key: Any, prefix: str = "") -> dict[str, np.ndarray] | None:
        memory = shared_memory()
        if memory is not None and self._memory_key(key, prefix) in memory:
            return memory[self._memory_key(key, prefix)]
        arrays = self._load_file(key, prefix)
        if memory is not None and arrays is not None:
            memory[self._memory_key(key, prefix)] = arrays
        return arrays

    def _load_file(self, key: Any, prefix: str) -> dict[str, np.ndarray] | None:
        path = self.path(key, prefix)
        if not self.enabled or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None  # damaged: recompute and overwrite
        stored = arrays.pop(_KEY_ARRAY, None)
        if stored is None or str(stored) != json.dumps(key, sort_keys=True, default=str):
            return None
        return arrays

    def store(self, key: Any, arrays: dict[str, np.ndarray], prefix: str = "") -> Path | None:
        """Write atomically; a cache that cannot be written (read-only disk, full disk) is skipped."""
        memory = shared_memory()
        if memory is not None:
            memory[self._memory_key(key, prefix)] = arrays
        if not self.enabled:
            return None
        path = self.path(key, prefix)
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.npz", dir=self.folder)
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays, **{_KEY_ARRAY: np.array(json.dumps(key, sort_keys=True, default=str))})
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())  # as a plain open() would create it, not mkstemp's 0600
            os.replace(tmp, path)
            return path
        except OSError:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            return None

    def load_or_build(self, key: Any, build: Callable[[], dict[str, np.ndarray]], prefix: str = "") -> dict[str, np.ndarray]:
        arrays = self.load(key, prefix)
        self.last_hit = arrays is not None
        if arrays is None:
            arrays = build()
            self.store(key, arrays, prefix)
        return arrays
