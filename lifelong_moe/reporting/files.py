"""Run directories and atomic writes: a crash never leaves a half-written results file, two runs started
at once never share a directory, one run directory is written by one process at a time (a lock), and a
name never leads outside `output.root/<name>/`."""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong_moe.errors import ConfigError, OutputError

MAX_NAME_BYTES = 200  # file systems allow 255 bytes per component; leave room for suffixes such as "-compare"
_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded", errno.EROFS: "the file system is read-only"}


def check_path_component(value: Any, key: str) -> str:
    """A name used as one directory: not empty, not `.`/`..`, no separator, no control character."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: must be a non-empty name, got {value!r}")
    if value in (".", ".."):
        raise ConfigError(f"{key}: '{value}' is not a name; use output.root to choose where runs go")
    if "/" in value or "\\" in value or (os.altsep and os.altsep in value):
        raise ConfigError(f"{key}: '{value}' contains a path separator; it must be a single name (use output.root to choose where runs go)")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{key}: {value!r} contains a control character")
    if value != value.strip():
        raise ConfigError(f"{key}: {value!r} starts or ends with white space")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ConfigError(f"{key}: longer than {MAX_NAME_BYTES} bytes")
    return value


def _output_error(path: Path, err: OSError) -> OutputError:
    reason = _FULL.get(err.errno or 0)
    detail = err.strerror or type(err).__name__
    return OutputError(f"cannot write {path}: {detail}" + (f" ({reason})" if reason else ""))


def check_overwrite(path: Path, key: str, starts_with: bytes) -> None:
    """Refuse to replace an existing file that is not this command's own kind of output (its first bytes
    are not `starts_with`): an `--output` pointing at a run's results or checkpoint, or at an input, would
    otherwise destroy it. An empty file holds nothing to lose; a directory is left for the write to refuse."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with path.open("rb") as f:
            head = f.read(len(starts_with))
    except OSError as err:
        raise _output_error(path, err) from None
    if head != starts_with:
        raise ConfigError(f"{key}: {path} exists and is not an output of this command; it is left as it is (choose another path)")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, give it the mode a plain open() would (the
    umask's), then rename over `path`.
    An OSError (a full disk, no permission) becomes an `OutputError` naming `path`; the old file stays."""
    from scenarios.cache import current_umask  # here: config checks import this module, and must not load numpy

    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a run's files get the user's umask
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _output_error(path, err) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    atomic_write_text(path, csv_text(header, rows))


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


@dataclass
class ClaimedDir:
    """A run directory this process created, and the parents it had to create on the way (so that a run
    that fails can remove exactly what it made)."""

    path: Path
    version: str
    created_parents: list[Path] = field(default_factory=list)

    def remove(self) -> None:
        """Delete the directory and the parents it created, where nothing else has appeared in them."""
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)
        for parent in reversed(self.created_parents):
            try:
                parent.rmdir()  # only if empty: another run may have claimed a sibling meanwhile
            except OSError:
                break


def claim_run_dir(root: str | Path, experiment: str, version: str | None, attempts: int = 1000) -> ClaimedDir:
    """Create `root/experiment/version` (the next free `version_N` by default) atomically: the directory is
    made with an exclusive mkdir, so of several processes asking at once each gets its own. An explicit
    `version` that exists already is refused, never reused."""
    check_path_component(experiment, "name")
    if version is not None:
        check_path_component(version, "output.version")
    base = Path(root) / experiment
    created: list[Path] = []
    missing = []
    for parent in (base, *base.parents):
        if parent.exists():
            break
        missing.append(parent)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output.root: cannot create {base}: {err.strerror or type(err).__name__}") from None
    created = [p for p in reversed(missing) if p.is_dir()]
    if not base.is_dir():
        raise ConfigError(f"output.root: {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"output.root: {base} is not writable")
    for _ in range(attempts):
        if version is None:
            try:
                taken = [int(m.group(1)) for p in base.iterdir() if (m := re.fullmatch(r"version_(\d+)", p.name))]
            except OSError as err:
                raise ConfigError(f"output.root: cannot list {base}: {err.strerror}") from None
            name = f"version_{max(taken, default=-1) + 1}"
        else:
            name = version
        run_dir = base / name
        try:
            run_dir.mkdir()
        except FileExistsError:
            if version is not None:
                raise ConfigError(f"output.version: {run_dir} already holds a run; choose another version or remove it") from None
            continue  # another process claimed this number a moment ago: take the next one
        except FileNotFoundError:  # a concurrent failed run removed the empty base: recreate it and retry
            base.mkdir(parents=True, exist_ok=True)
            continue
        except OSError as err:
            raise ConfigError(f"output.root: cannot create {run_dir}: {err.strerror or type(err).__name__}") from None
        return ClaimedDir(run_dir, name, created)
    raise ConfigError(f"output.root: could not claim a new version under {base} after {attempts} attempts")


def new_run_dir(root: str | Path, experiment: str, version: str | None) -> tuple[Path, str]:
    """`claim_run_dir`, for callers that only need the path and its version."""
    claimed = claim_run_dir(root, experiment, version)
    return claimed.path, claimed.version


LOCK_FILE = ".lock"


class RunLock:
    """An exclusive claim on a run directory: `flock` on its `.lock` file, held while this process writes
    the run. The kernel drops it when the process ends, however it ends (a crash or SIGKILL included),
    so a stale lock never blocks a later resume."""

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir, self.fd = run_dir, fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


def lock_run_dir(run_dir: Path, key: str) -> RunLock:
    """Claim `run_dir` for this process, or refuse in one line naming `key` if another process holds it
    (two `--resume` of one directory, or a resume of a run still going)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as err:
        raise ConfigError(f"{key}: cannot lock {run_dir}: {err.strerror or type(err).__name__}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise ConfigError(f"{key}: {run_dir} is being written by another lifelong-moe process{who}; wait for it "
                              f"to end, then resume") from None
        raise ConfigError(f"{key}: cannot lock {run_dir}: {err.strerror or type(err).__name__}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the message a second claimant gets
    return RunLock(Path(run_dir), fd)
