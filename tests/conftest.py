"""Shared fixtures: tiny streams and configs that train in seconds on CPU."""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifelong_moe.offline import hf_offline

NETGUARD = Path(__file__).resolve().parent / "netguard"


def _load_netguard() -> Any:
    spec = importlib.util.spec_from_file_location("lifelong_moe_netguard", NETGUARD / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # installs the guard in this process
    return module


netguard = _load_netguard()

def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): one worker per core this process may use (its affinity, which a
    container or `taskset` limits; psutil's count would not see that), at most 4."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one torch thread each, in subprocesses too
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

hf_offline()  # now, before test modules import Lightning (and through it huggingface_hub)


@pytest.fixture(autouse=True, scope="session")
def offline_and_private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reaches the network: sockets to non-local hosts fail here and in every Python subprocess
    (netguard/sitecustomize.py on PYTHONPATH), and Hugging Face libraries run offline. Caches of decoded
    data and features go to a fresh folder, never the user's ~/.cache."""
    from lifelong_moe.offline import OFFLINE_ENV

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFELONG_MOE_CACHE", str(tmp_path_factory.mktemp("lifelong_moe_cache")))
        for key, value in OFFLINE_ENV.items():
            mp.setenv(key, value)
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(NETGUARD), os.environ.get("PYTHONPATH")) if p))
        yield

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
    from lifelong_moe.features import build_experiment_stream
    from lifelong_moe.runner import build_model

    cfg = config_from_dict(cfg_dict)
    L.seed_everything(0, verbose=False)
    stream = build_experiment_stream(cfg)
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
