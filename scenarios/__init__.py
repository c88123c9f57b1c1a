"""Task streams: data sources and the builder that turns a stream config into an Avalanche benchmark.

Public names are loaded on first use: the stream schema (`scenarios.config`) is read while a config is
checked, and must not pull in Avalanche and torch, so that a config error is reported in a moment."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

# Avalanche imports qpsolvers (for GEM), which warns at import when no QP solver is installed; GEM names the
# solver it needs (quadprog) when it runs, so the warning says nothing to anyone else
warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning, module="qpsolvers")

_EXPORTS = {
    "ConfigError": "scenarios.errors",
    "DataError": "scenarios.errors",
    "UserError": "scenarios.errors",
    "Experience": "scenarios.builder",
    "ExperienceSpec": "scenarios.builder",
    "Stream": "scenarios.builder",
    "build_stream": "scenarios.builder",
    "ExperienceConfig": "scenarios.config",
    "ScenarioKind": "scenarios.config",
    "SourceConfig": "scenarios.config",
    "SplitRuleConfig": "scenarios.config",
    "StreamConfig": "scenarios.config",
    "MultimodalDataset": "scenarios.dataset",
    "MASK_KEY": "scenarios.modality",
    "ModalitySpec": "scenarios.modality",
    "SOURCES": "scenarios.sources",
    "SourceData": "scenarios.sources",
    "Split": "scenarios.sources",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scenarios' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
