"""The model and strategy registries. The `Registry` class itself lives in `scenarios.registry` (the
bottom layer, whose data sources register the same way); it is re-exported here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scenarios.registry import Registry, resolve_params

__all__ = ["MODELS", "STRATEGIES", "Registry", "resolve_params"]

MODELS: Registry[Callable[..., Any]] = Registry("model", builtins=("lifelong_moe.models",), names=("moe", "multimodal_mlp", "stats"))
"""`factory(params, *, n_classes, scenario, train) -> ContinualModule`. Metadata: `backbone=True` marks a
dense model that baselines may train (compare's default backbone)."""

STRATEGIES: Registry[Callable[..., Any]] = Registry(
    "strategy", builtins=("lifelong_moe.strategies",),
    names=("agem", "avl_naive", "cumulative", "der", "er_ace", "ewc", "gem", "lwf", "naive", "replay", "si"))
"""`factory(params) -> Strategy` (what each experience trains on)."""
