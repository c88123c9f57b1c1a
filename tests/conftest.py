"""Shared fixtures: tiny streams and configs that train in seconds on CPU."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

TINY_STREAM: dict[str, Any] = {
    "scenario": "class_incremental",
    "sources": {
        "syn": {
            "kind": "synthetic",
            "params": {"n_classes": 4, "n_modalities": 2, "dim": 8, "n_train_per_class": 40, "n_test_per_class": 20, "separation": 3.0},
        }
    },
    "split": {"source": "syn", "n_experiences": 2},
}


def tiny_config(root: Path, **overrides: Any) -> dict[str, Any]:
    """A two-experience synthetic stream, three epochs, CPU, no progress bar, outputs under `root`."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "stream": copy.deepcopy(TINY_STREAM),
        "model": {"name": "multimodal_mlp", "params": {"embed_dim": 16, "hidden_dim": 32}},
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.01},
        "trainer": {"accelerator": "cpu", "devices": "1", "enable_progress_bar": False},
        "output": {"root": str(root)},
    }
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Any]:
    return tiny_config(tmp_path / "runs")


def build_model_and_stream(cfg_dict: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(config, stream, untrained model) for a config dict, seeded as the runner seeds."""
    import lightning as L

    from lifelong_moe import config_from_dict
    from lifelong_moe.runner import build_model
    from scenarios import build_stream

    cfg = config_from_dict(cfg_dict)
    L.seed_everything(0, verbose=False)
    stream = build_stream(cfg.stream, cfg.seed)
    return cfg, stream, build_model(cfg, stream)


def train_experience(cfg: Any, model: Any, exp: Any, seed: int = 0) -> None:
    """What the runner does for one experience: adapt, fit, settle."""
    from lifelong_moe.training import fit_experience

    model.on_experience_start(exp)
    fit_experience(model, exp.dataset, cfg.train, cfg.trainer, seed=seed, logger=False)
    model.on_experience_end(exp)


@pytest.fixture(scope="session")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real earlier run (tiny stream, one epoch) that every bad-input case must leave byte-identical;
    the cases write under the same output.root."""
    from battery import Earlier
    from lifelong_moe import config_from_dict, run

    root = tmp_path_factory.mktemp("earlier") / "runs"
    result = run(config_from_dict(tiny_config(root, train={"epochs": 1, "batch_size": 16, "lr": 0.01})), progress=lambda s: None)
    return Earlier.take(root, result.run_dir)
