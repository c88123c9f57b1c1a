"""Registries of models and strategies, chosen by name in config (`model.name`, `strategy.name`).

Data sources live in `scenarios.SOURCES`; modality encoders in `lifelong_moe.models.encoders.ENCODERS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scenarios.registry import Registry

MODELS: Registry[Callable[..., Any]] = Registry("model")
"""`factory(params, *, n_classes, scenario, train) -> ContinualModule`."""

STRATEGIES: Registry[Callable[..., Any]] = Registry("strategy")
"""`factory(params) -> Strategy` (what each experience trains on)."""


def load_builtins() -> None:
    """Import the modules whose decorators register the built-in models, strategies and sources."""
    import importlib

    for module in ("lifelong_moe.models", "lifelong_moe.strategies", "scenarios.sources"):
        importlib.import_module(module)
