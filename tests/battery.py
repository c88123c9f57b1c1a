"""Tools of the bad-input battery (tests/test_bad_inputs_*.py): an earlier run whose files every case must
leave byte-identical, and the check that a command failed as the README promises: the exit code, exactly
one line on stderr naming the key, file or sample at fault, and no traceback."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conftest import tiny_config, write_yaml


@dataclass
class Earlier:
    """A real finished run under `root` (the output.root every case writes to), snapshotted byte by byte."""

    root: Path
    run_dir: Path
    snapshot: dict[str, bytes]
    dirs: set[str]

    @classmethod
    def take(cls, root: Path, run_dir: Path) -> Earlier:
        files, dirs = _scan(root)
        return cls(root, run_dir, files, dirs)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The tiny config, writing its runs beside the earlier one."""
        return tiny_config(self.root, **overrides)

    def assert_untouched(self, new_runs_allowed: bool = False) -> None:
        """Every earlier file byte-identical; no new file or directory unless a case may create a run."""
        files, dirs = _scan(self.root)
        changed = sorted(k for k, v in self.snapshot.items() if files.get(k) != v)
        assert not changed, f"earlier files changed or removed: {changed}"
        if not new_runs_allowed:
            assert set(files) == set(self.snapshot), f"new files: {sorted(set(files) - set(self.snapshot))}"
            assert dirs == self.dirs, f"new directories: {sorted(dirs - self.dirs)}"


def _scan(root: Path) -> tuple[dict[str, bytes], set[str]]:
    files, dirs = {}, set()
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():  # its target, never its content (it may be /dev/zero)
            files[rel] = f"-> {os.readlink(p)}".encode()
        elif p.is_dir():
            dirs.add(rel)
        else:
            files[rel] = p.read_bytes()
    return files, dirs


def one_line_error(main: Any, argv: list[str], capsys: Any, *expected: str, code: int = 2) -> str:
    """Run the CLI in-process; assert its exit code, one stderr line holding every `expected`, no traceback."""
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == code, f"exit {rc}, stderr: {out.err}"
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {out.err}"
    assert lines[0].startswith("lifelong-moe: "), lines[0]
    assert "Traceback" not in out.err + out.out
    for text in expected:
        assert text in lines[0], f"{text!r} not in: {lines[0]}"
    return lines[0]


def npz_config(earlier: Earlier, folder: Path, train_file: Path | str, test_file: Path | str, n_experiences: int = 2,
               kinds: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """The tiny config over an `npz` source (split into `n_experiences`); `overrides` replace top-level keys."""
    cfg = earlier.config(**overrides)
    params: dict[str, Any] = {"train": str(train_file), "test": str(test_file)}
    if kinds:
        params["kinds"] = kinds
    cfg["stream"]["sources"] = {"mine": {"kind": "npz", "params": params}}
    cfg["stream"]["split"] = {"source": "mine", "n_experiences": n_experiences}
    return cfg


def user_source(make: Callable[[Path], dict[str, Any]], pretrained: dict[str, Any] | None = None,
                n_experiences: int = 2) -> Callable[[Earlier, Path], list[str]]:
    """A case's command-line arguments: the tiny config over the source `make(tmp)` returns (its own files,
    made or damaged in `tmp`), split into `n_experiences`, with `pretrained` encoders ('{tmp}' in their
    strings replaced)."""

    def build(earlier: Earlier, tmp: Path) -> list[str]:
        cfg = earlier.config()
        cfg["stream"]["sources"] = {"mine": make(tmp)}
        cfg["stream"]["split"] = {"source": "mine", "n_experiences": n_experiences}
        if pretrained is not None:
            cfg["pretrained"] = {m: {k: (v.format(tmp=tmp) if isinstance(v, str) else v) for k, v in enc.items()}
                                 for m, enc in pretrained.items()}
        return [str(write_config(tmp / "c.yaml", cfg))]

    return build


def save_npz(path: Path, n: int = 8, **override: Any) -> Path:
    """A small valid split (two classes, features x [n, 3]) with arrays replaced or added by `override`."""
    arrays: dict[str, Any] = {"x": np.linspace(0, 1, n * 3, dtype=np.float32).reshape(n, 3), "labels": np.arange(n) % 2}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    return write_yaml(path, copy.deepcopy(cfg))


# ---- workers for the concurrency tests (importable by name in spawned processes) ----------------------

def claim_many(root: str, name: str, n: int, barrier: Any, results: Any) -> None:
    """Claim `n` run directories as fast as possible once every process is ready."""
    from lifelong_moe.reporting.files import claim_run_dir

    barrier.wait()
    results.put([str(claim_run_dir(root, name, None).path) for _ in range(n)])


def run_when_ready(cfg_dict: dict[str, Any], barrier: Any, results: Any) -> None:
    """A whole run through the library, started at the same moment as the others."""
    import torch

    from lifelong_moe import config_from_dict, run

    torch.set_num_threads(1)
    cfg = config_from_dict(cfg_dict)
    barrier.wait()
    result = run(cfg, progress=lambda s: None)
    results.put((str(result.run_dir), result.accuracy_matrix.tolist()))
