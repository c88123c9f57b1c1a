"""The real `lifelong-moe` command, end to end in a subprocess, on a tiny stream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config, write_yaml

ROOT = Path(__file__).resolve().parents[1]


def _cli() -> list[str]:
    exe = shutil.which("lifelong-moe", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "lifelong_moe.cli"]


@pytest.mark.slow
def test_run_validate_list_end_to_end(tmp_path):
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([*_cli(), "run", str(cfg), "train.epochs=1", "name=e2e"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "[lifelong-moe] experience 2/2" in proc.stdout
    run_dir = tmp_path / "runs" / "e2e" / "version_0"
    res = json.loads((run_dir / "results.json").read_text())
    assert res["experiment"] == "e2e" and res["status"] == "complete"
    assert "epochs: 1" in (run_dir / "config.yaml").read_text()
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())

    proc = subprocess.run([*_cli(), "validate", str(cfg)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "valid (class_incremental, 2 experiences, 4 classes)" in proc.stdout

    proc = subprocess.run([*_cli(), "list"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0
    for name in ("multimodal_digits", "synthetic", "npz", "multimodal_mlp", "naive", "cumulative"):
        assert name in proc.stdout

    for sub in ("run", "validate", "list"):
        assert subprocess.run([*_cli(), sub, "--help"], capture_output=True, env=env).returncode == 0


def test_every_shipped_config_validates():
    from lifelong_moe import load_config

    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)
