"""Load an experiment config from YAML plus dotlist overrides, and check it against the schema."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lifelong_moe.config.schema import ExperimentConfig
from lifelong_moe.errors import ConfigError, first_line
from lifelong_moe.features.base import check_pretrained
from lifelong_moe.registry import MODELS, STRATEGIES, resolve_params


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The validated config: YAML at `path`, then `key=value` overrides; errors name the key path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', err)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    return config_from_dict(raw, overrides)


def config_from_dict(raw: Any, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Merge `raw` and the overrides onto the schema; check registered names and their params."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), raw)
        for item in overrides:
            key, value = _parse_override(item)
            OmegaConf.update(cfg, key, value, merge=True)  # list indices work: stream.experiences.0.classes=[1]
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"{missing[0]}: missing mandatory value")
        obj: ExperimentConfig = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        key = err.full_key or "config"
        raise ConfigError(f"{key}: {first_line(err)}") from None
    except (TypeError, ValueError) as err:  # e.g. a mapping assigned onto a list
        raise ConfigError(f"config: {err}") from None
    for key, registry, component in (("model", MODELS, obj.model), ("strategy", STRATEGIES, obj.strategy)):
        registry.get(component.name, f"{key}.name")
        # resolved once, here: the complete params (defaults filled in) are what config.yaml records
        resolved = resolve_params(registry, component.name, component.params, f"{key}.params")
        component.params = dataclasses.asdict(resolved) if resolved is not None else {}
    _check_compatible(obj)
    check_pretrained(obj.pretrained)
    _check_values(obj)
    return obj


def _check_compatible(cfg: ExperimentConfig) -> None:
    """A model that routes each training batch to the current experience's experts trains only with
    strategies that feed it that experience's data alone, through the native loop."""
    if MODELS.meta(cfg.model.name).get("routes_by_experience") and not STRATEGIES.meta(cfg.strategy.name).get("current_experience_only"):
        raise ConfigError(
            f"strategy.name: '{cfg.strategy.name}' trains on more than the current experience's data (or through "
            f"Avalanche's loop), but model '{cfg.model.name}' routes each training batch to the current experience's "
            f"experts; use strategy 'naive' with it, or a dense model such as multimodal_mlp")


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{item}': expected key=value")
    # OmegaConf's own dotlist grammar types the value (numbers, lists, null) as it would in YAML
    return key.strip(), OmegaConf.from_dotlist([f"_={text}"])["_"]


def _check_values(cfg: ExperimentConfig) -> None:
    t = cfg.train
    for key, value in (("train.epochs", t.epochs), ("train.batch_size", t.batch_size), ("train.eval_batch_size", t.eval_batch_size)):
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
    if t.lr <= 0:
        raise ConfigError(f"train.lr: must be positive, got {t.lr}")
    if t.optimizer not in ("adam", "adamw", "sgd"):
        raise ConfigError(f"train.optimizer: unknown optimizer '{t.optimizer}'; use adam, adamw or sgd")
    if not 0.0 <= t.validation_fraction <= 0.5:
        raise ConfigError(f"train.validation_fraction: must lie in [0, 0.5], got {t.validation_fraction}")
    if not 0 <= cfg.trainer.cpu_threads <= 1024:
        raise ConfigError(f"trainer.cpu_threads: must lie in [0, 1024] (0: torch's default), got {cfg.trainer.cpu_threads}")
    if not 0.0 <= t.modality_dropout < 1.0:
        raise ConfigError(f"train.modality_dropout: must lie in [0, 1), got {t.modality_dropout}")
    for k, rate in enumerate(cfg.modality_eval.missing_rates):
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"modality_eval.missing_rates[{k}]: must lie in [0, 1), got {rate}")
    if cfg.reference_results is not None and not Path(cfg.reference_results).is_file():
        raise ConfigError(f"reference_results: file not found: {cfg.reference_results}")


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML, as saved in the run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_container(cfg: ExperimentConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)  # type: ignore[return-value]


__all__ = ["config_from_dict", "load_config", "to_container", "to_yaml"]
