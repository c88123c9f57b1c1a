"""lifelong-moe: continual multimodal learning with growing Mixture-of-Experts, on Lightning and Avalanche.

Public names are loaded on first use, so the CLI's `--help` need not import torch and Avalanche."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "lifelong_moe.errors",
    "DataError": "lifelong_moe.errors",
    "UserError": "lifelong_moe.errors",
    "SOURCES": "scenarios.sources",
    "build_stream": "scenarios.builder",
    "ExperimentConfig": "lifelong_moe.config",
    "config_from_dict": "lifelong_moe.config",
    "load_config": "lifelong_moe.config",
    "summarize": "lifelong_moe.metrics",
    "ContinualModule": "lifelong_moe.models",
    "ENCODERS": "lifelong_moe.models",
    "MODELS": "lifelong_moe.registry",
    "STRATEGIES": "lifelong_moe.registry",
    "RunResult": "lifelong_moe.runner",
    "build_model": "lifelong_moe.runner",
    "run": "lifelong_moe.runner",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lifelong_moe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def registered_components() -> dict[str, dict[str, str]]:
    """Every registry's names and one-line descriptions."""
    from lifelong_moe.features import EXTRACTORS
    from lifelong_moe.models.encoders import ENCODERS
    from lifelong_moe.registry import MODELS, STRATEGIES
    from scenarios.sources import SOURCES

    return {
        "data sources": SOURCES.describe(),
        "models": MODELS.describe(),
        "strategies": STRATEGIES.describe(),
        "modality encoders": ENCODERS.describe(),
        "pretrained encoders": EXTRACTORS.describe(),
    }


__all__ = sorted([*_EXPORTS, "registered_components"])
