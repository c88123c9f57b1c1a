"""Bad-input battery, limits family: inputs that would make a few bytes cost gigabytes or minutes (YAML
aliases, deep nesting, huge files and overrides, sizes that allocate terabytes), a full disk, and training
that turns NaN. Each gets one line and exit code 2 through the real CLI, in bounded time, and the earlier
run stays byte-identical; a run stopped after its first experience keeps that checkpoint, marked honestly."""

from __future__ import annotations

import errno
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from battery import Earlier, npz_config, one_line_error, write_config
from lifelong_moe.cli import main

BILLION_LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(8)]
) + "\n"


def text_file(content: str | bytes) -> Callable[[Earlier, Path], list[str]]:
    def build(earlier: Earlier, tmp: Path) -> list[str]:
        path = tmp / "big.yaml"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return [str(path)]

    return build


def sparse_file(size: int) -> Callable[[Earlier, Path], list[str]]:
    def build(earlier: Earlier, tmp: Path) -> list[str]:
        path = tmp / "huge.yaml"
        with open(path, "wb") as fh:
            fh.truncate(size)  # a hole: no disk used, but a reader that trusts it would read it all
        return [str(path)]

    return build


def good_with(*items: str) -> Callable[[Earlier, Path], list[str]]:
    return lambda earlier, tmp: [str(write_config(tmp / "c.yaml", earlier.config())), *items]


def sparse_reference(earlier: Earlier, tmp: Path) -> list[str]:
    with open(tmp / "ref.json", "wb") as fh:
        fh.truncate(100 * 2**20)
    return [str(write_config(tmp / "c.yaml", earlier.config(reference_results=str(tmp / "ref.json"))))]


def nested_mappings(depth: int) -> str:
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v: 1\n"


CASES: list[tuple[str, Callable[[Earlier, Path], list[str]], tuple[str, ...]]] = [
    ("billion laughs", text_file(BILLION_LAUGHS), ("big.yaml: invalid YAML at line 1", "anchor '&a' is not supported")),
    ("alias bomb in an override", good_with("name=[&a [x, x, x], [*a, *a, *a]]"), ("override 'name=[&a", "anchor '&a' is not supported")),
    ("100000 nested lists", text_file("[" * 100_000 + "]" * 100_000), ("big.yaml: invalid YAML", "nested more than 40 levels deep")),
    ("1000 nested mappings", text_file(nested_mappings(1000)), ("big.yaml: invalid YAML", "nested more than 40 levels deep")),
    ("a 2 MiB config", text_file("# " + "x" * (2 * 2**20) + "\n"), ("big.yaml: larger than 1024 KiB",)),
    ("a 1 GiB sparse config", sparse_file(2**30), ("huge.yaml: larger than 1024 KiB",)),
    ("half a million values", text_file("train: {epochs: 1}\nx: [" + "0," * 500_000 + "0]\n"), ("big.yaml: invalid YAML", "more than 100000 values")),
    ("a 20000-character override", good_with("name=" + "n" * 20_000), ("longer than 10000 characters",)),
    ("a deeply nested override", good_with("name=" + "[" * 3000 + "]" * 3000), ("override 'name=[[[", "nested more than 40 levels deep")),
    ("a 100 MiB reference file", sparse_reference, ("reference_results:", "larger than 64 MiB")),
    ("a trillion synthetic samples", good_with("stream.sources.syn.params.n_train_per_class=1000000000000"),
     ("stream.sources.syn.params: n_classes x n_*_per_class x n_modalities x dim asks for", "more than the 500,000,000 allowed")),
    ("a million-dimensional synthetic source", good_with("stream.sources.syn.params.dim=1000000"),
     ("stream.sources.syn.params: n_modalities (at most 1000), dim (at most 100000)",)),
    ("a billion-word vocabulary", lambda e, t: [str(write_config(t / "c.yaml", {**e.config(), "stream": {
        "sources": {"t": {"kind": "text", "params": {"vocab_size": 10**9}}}, "split": {"source": "t", "n_experiences": 2}}}))],
     ("stream.sources.t.params: vocab_size: at most 1048576, got 1000000000",)),
    ("a task label of a trillion", lambda e, t: [str(write_config(t / "c.yaml", {**e.config(), "stream": {
        **e.config()["stream"], "split": None, "scenario": "task_incremental",
        "experiences": [{"source": "syn", "classes": [0, 1], "task_label": 10**12}, {"source": "syn", "classes": [2, 3]}]}}))],
     ("stream.experiences[0].task_label: must lie in 0..9999, got 1000000000000",)),
    ("a million experiences", good_with("stream.split.n_experiences=1000000"), ("stream.split.n_experiences: must be at most 1000, got 1000000",)),
    ("a thousand missing rates", good_with("modality_eval.missing_rates=[" + ",".join(["0.1"] * 1000) + "]"),
     ("modality_eval.missing_rates: at most 32 rates, got 1000",)),
    ("a billion epochs", good_with("train.epochs=1000000000"), ("train.epochs: must be at most 1000000, got 1000000000",)),
    ("a batch of 2**40", good_with("train.batch_size=1099511627776"), ("train.batch_size: must be at most 2147483647",)),
    ("ten thousand workers", good_with("train.num_workers=10000"), ("train.num_workers: must be at most 64, got 10000",)),
    ("a hundred thousand devices", good_with("trainer.devices=100000"), ("trainer.devices: a device count must lie in 1..1024 (or -1 for all), got 100000",)),
    ("seed of 2**64", good_with(f"seed={2**64}"), ("seed: must be at most 4294967295",)),
]


@pytest.mark.parametrize("name,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bounded_work(earlier, tmp_path, capsys, name, build, expected):
    argv = build(earlier, tmp_path)
    for command in ("validate", "run"):
        start = time.perf_counter()
        one_line_error(main, [command, *argv], capsys, *expected)
        assert time.perf_counter() - start < 30, "refusing must not take long"
    earlier.assert_untouched()


def test_alias_bomb_is_refused_before_any_expansion(earlier, tmp_path, capsys):
    """About 400 bytes that expand to 10**9 nodes under a loader that follows aliases: refused at once."""
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 500
    start = time.perf_counter()
    one_line_error(main, ["validate", str(path)], capsys, "anchor '&a' is not supported")
    assert time.perf_counter() - start < 5
    earlier.assert_untouched()


# ---- a full disk -------------------------------------------------------------------------------

def _full_disk_on(monkeypatch: pytest.MonkeyPatch, file_name: str, after: int = 0) -> None:
    """The atomic writer's temporary file for `file_name` cannot be created after `after` successes: ENOSPC."""
    real = tempfile.mkstemp
    seen = {"n": 0}

    def mkstemp(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("prefix", "").startswith(f".{file_name}."):
            seen["n"] += 1
            if seen["n"] > after:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_full_disk_before_anything_was_kept(earlier, tmp_path, capsys, monkeypatch):
    path = write_config(tmp_path / "c.yaml", earlier.config(name="disk"))
    _full_disk_on(monkeypatch, "config.yaml")
    one_line_error(main, ["run", str(path)], capsys,
                   f"cannot write {earlier.root}/disk/version_0/config.yaml: No space left on device (the disk is full)")
    assert not (earlier.root / "disk").exists()  # the half-made run directory and its parent are gone
    earlier.assert_untouched()


def test_full_disk_at_the_second_checkpoint_keeps_the_first(earlier, tmp_path, capsys, monkeypatch):
    cfg = earlier.config(name="disk2", train={"epochs": 1, "batch_size": 16, "lr": 0.01})
    cfg["output"]["root"] = str(tmp_path / "runs")
    path = write_config(tmp_path / "c.yaml", cfg)
    _full_disk_on(monkeypatch, "checkpoint.pt", after=1)
    run_dir = tmp_path / "runs" / "disk2" / "version_0"
    one_line_error(main, ["run", str(path)], capsys,
                   f"cannot write {run_dir}/checkpoint.pt: No space left on device (the disk is full)",
                   f"{run_dir} keeps 1 completed experience(s)")
    monkeypatch.undo()
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["completed"] == 1
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "the disk is full" in results["error"]
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind
    assert main(["run", str(path), "--resume", str(run_dir)]) == 0  # space again: the run completes
    earlier.assert_untouched()


# ---- training that turns NaN ---------------------------------------------------------------------

def _exploding_npz(tmp: Path, exploding_classes: set[int]) -> tuple[Path, Path]:
    """Classes in `exploding_classes` have features at ±3e38: finite float32, but the first layer overflows."""
    rng = np.random.default_rng(0)
    paths = []
    for name, n in (("train", 32), ("test", 16)):
        y = np.arange(n) % 4
        x = rng.random((n, 3)).astype(np.float32)
        rows = np.isin(y, list(exploding_classes))
        x[rows] = np.where(rng.random((int(rows.sum()), 3)) > 0.5, 3.0e38, -3.0e38)
        np.savez(tmp / f"{name}.npz", x=x, labels=y)
        paths.append(tmp / f"{name}.npz")
    return paths[0], paths[1]


def test_loss_turning_nan_in_the_second_experience_keeps_the_first(earlier, tmp_path, capsys):
    train, test = _exploding_npz(tmp_path, {2, 3})
    cfg = npz_config(earlier, tmp_path, train, test, name="nan2")
    cfg["output"]["root"] = str(tmp_path / "runs")
    path = write_config(tmp_path / "c.yaml", cfg)
    run_dir = tmp_path / "runs" / "nan2" / "version_0"
    one_line_error(main, ["run", str(path), "train.epochs=2"], capsys,
                   "training: the loss became NaN or infinite in experience 2, epoch 1/2", f"{run_dir} keeps 1 completed experience(s)")
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["completed"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "experience 2, epoch 1/2" in results["error"]
    assert results["completed_experiences"] == 1
    earlier.assert_untouched()


def test_loss_turning_nan_at_once_keeps_nothing(earlier, tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", earlier.config(name="nan1"))
    one_line_error(main, ["run", str(path), "train.lr=1e30"], capsys,
                   "training: the loss became NaN or infinite in experience 1, epoch 1/3", "nothing was kept")
    assert not (earlier.root / "nan1").exists()
    earlier.assert_untouched()
