"""The bad-input battery: each case gets a one-line error naming the culprit and exit code 2, and nothing
already written is lost. Plus: outputs are written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config, write_yaml
from lifelong_moe.cli import main
from lifelong_moe.reporting.files import atomic_write_text


def npz_config(tmp_path: Path, train: Path, test: Path) -> Path:
    cfg = tiny_config(tmp_path / "runs")
    cfg["stream"]["sources"] = {"mine": {"kind": "npz", "params": {"train": str(train), "test": str(test)}}}
    cfg["stream"]["split"] = {"source": "mine", "n_experiences": 2}
    return write_yaml(tmp_path / "c.yaml", cfg)


def save(path: Path, n: int = 8, **override) -> Path:
    arrays = {"x": np.ones((n, 3), np.float32), "labels": np.arange(n) % 2}
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def truncated(tmp_path):
    good = save(tmp_path / "full.npz", n=50)
    data = good.read_bytes()
    (tmp_path / "train.npz").write_bytes(data[: len(data) // 2])
    return tmp_path / "train.npz", save(tmp_path / "test.npz"), "train.npz: not a readable .npz file"


def infinite(tmp_path):
    x = np.ones((8, 3), np.float32)
    x[5, 0] = np.inf
    return save(tmp_path / "train.npz", x=x), save(tmp_path / "test.npz"), "train.npz: sample 5 of modality 'x' is NaN or infinite"


def negative_label(tmp_path):
    return save(tmp_path / "train.npz", labels=np.array([0, 1, 0, 1, -3, 1, 0, 1])), save(tmp_path / "test.npz"), \
        "train.npz: sample 4 has negative label -3"


def label_unseen_in_training(tmp_path):
    return save(tmp_path / "train.npz"), save(tmp_path / "test.npz", labels=np.array([0, 1, 0, 1, 0, 7, 0, 1])), \
        "test.npz: labels [7] never occur in"


def empty_split(tmp_path):
    return save(tmp_path / "train.npz"), save(tmp_path / "test.npz", n=0, x=np.ones((0, 3), np.float32), labels=np.zeros(0, int)), \
        "test.npz: the split is empty"


def length_mismatch(tmp_path):
    return save(tmp_path / "train.npz", x=np.ones((5, 3), np.float32)), save(tmp_path / "test.npz"), \
        "train.npz: modality 'x' has 5 samples but labels has 8"


def missing_file(tmp_path):
    return tmp_path / "absent.npz", save(tmp_path / "test.npz"), f"stream.sources.mine.params.train: file not found: {tmp_path / 'absent.npz'}"


CASES = [truncated, infinite, negative_label, label_unseen_in_training, empty_split, length_mismatch, missing_file]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_data_file_is_named(tmp_path, capsys, case):
    train, test, expected = case(tmp_path)
    assert main(["run", str(npz_config(tmp_path, train, test))]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # rejected before anything is written


def test_modality_absent_from_every_sample(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "runs")
    cfg["stream"].pop("split")
    cfg["stream"]["experiences"] = [{"source": "syn", "train_missing_rate": {"m1": 1.0}}]
    assert main(["run", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 2
    assert "stream.experiences[0].train_missing_rate.m1: missing rate must lie in [0, 1), got 1.0" in capsys.readouterr().err


def test_unwritable_output_root(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg = tiny_config(blocker / "runs")
    assert main(["run", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 2
    assert f"output.root: cannot create {blocker / 'runs' / 'tiny'}" in capsys.readouterr().err


def test_bad_input_leaves_an_earlier_run_untouched(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "runs")
    good = write_yaml(tmp_path / "good.yaml", cfg)
    assert main(["run", str(good), "train.epochs=1"]) == 0
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert main(["run", str(good), "output.version=version_0"]) == 2  # would overwrite
    assert main(["run", str(good), "seed=9", "--resume", str(run_dir)]) == 2  # another config
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_text(target, '{"old": true}')

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process died between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, '{"new": true, "half-written": ' + "x" * 10000)
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind
