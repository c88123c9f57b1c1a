"""Checks of plain config values, made at load time with the key named: numbers in range and finite,
names that are one path component, and Trainer settings Lightning would accept. Nothing here imports
torch or Lightning; `lifelong_moe.preparation` then asks Lightning itself whether this machine can run them."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from lifelong_moe.config.schema import ExperimentConfig
from lifelong_moe.errors import ConfigError
from lifelong_moe.reporting.files import check_path_component

MAX_SEED = 2**32 - 1  # numpy's seeds; Lightning replaces a larger one with a random seed
MAX_BATCH = 2**31 - 1
MAX_NUM_WORKERS = 64
MAX_DEVICES = 1024
MAX_NODES = 10_000
MAX_EXPERIENCES = 1000
MAX_MISSING_RATES = 32
MAX_PRETRAINED = 64
DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,4})?")
OPTIMIZERS = ("adam", "adamw", "sgd")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16")
# Lightning's other settings cast every parameter and buffer, the class statistics and fixed feature maps
# included, while the statistics' own passes (when an experience ends) feed them float32 data
CASTING_PRECISIONS = ("64-true", "64", "16-true", "bf16-true", "transformer-engine", "transformer-engine-float16")


def check_values(cfg: ExperimentConfig) -> None:
    check_path_component(cfg.name, "name")
    if cfg.output.version is not None:
        check_path_component(cfg.output.version, "output.version")
    if not cfg.output.root.strip() or "\0" in cfg.output.root:
        raise ConfigError(f"output.root: must be a directory path, got {cfg.output.root!r}")
    _int_range("seed", cfg.seed, 0, MAX_SEED)
    _check_sizes(cfg)
    _check_train(cfg)
    _check_trainer(cfg)
    _check_pretrained(cfg)
    for k, rate in enumerate(cfg.modality_eval.missing_rates):
        _unit_interval(f"modality_eval.missing_rates[{k}]", rate)
    ref = cfg.reference_results
    if ref is not None:
        if not ref.strip() or "\0" in ref:
            raise ConfigError(f"reference_results: must be the path of a results.json, got {ref!r}")
        if Path(ref).is_dir():
            raise ConfigError(f"reference_results: {ref} is a directory; give the results.json inside it")
        if not Path(ref).is_file():
            raise ConfigError(f"reference_results: file not found: {ref}")


def _check_sizes(cfg: ExperimentConfig) -> None:
    """Counts that multiply the work of a run (R is T x T; every missing rate is one more evaluation)."""
    if len(cfg.stream.experiences) > MAX_EXPERIENCES:
        raise ConfigError(f"stream.experiences: at most {MAX_EXPERIENCES} experiences, got {len(cfg.stream.experiences)}")
    if cfg.stream.split is not None:
        _int_range("stream.split.n_experiences", cfg.stream.split.n_experiences, 1, MAX_EXPERIENCES)
    if len(cfg.modality_eval.missing_rates) > MAX_MISSING_RATES:
        raise ConfigError(f"modality_eval.missing_rates: at most {MAX_MISSING_RATES} rates, got {len(cfg.modality_eval.missing_rates)}")


def _check_train(cfg: ExperimentConfig) -> None:
    t = cfg.train
    _int_range("train.epochs", t.epochs, 1, 1_000_000)
    _int_range("train.batch_size", t.batch_size, 1, MAX_BATCH)
    _int_range("train.eval_batch_size", t.eval_batch_size, 1, MAX_BATCH)
    if not math.isfinite(t.lr):
        raise ConfigError(f"train.lr: must be a finite number, got {t.lr}")
    if t.lr <= 0:
        raise ConfigError(f"train.lr: must be positive, got {t.lr}")
    if not math.isfinite(t.weight_decay) or t.weight_decay < 0:
        raise ConfigError(f"train.weight_decay: must be a finite number >= 0, got {t.weight_decay}")
    if t.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer: unknown optimizer '{t.optimizer}'; use adam, adamw or sgd")
    _int_range("train.num_workers", t.num_workers, 0, MAX_NUM_WORKERS)
    _int_range("trainer.cpu_threads", cfg.trainer.cpu_threads, 0, 1024)
    _unit_interval("train.modality_dropout", t.modality_dropout)
    if not 0.0 <= t.shift_augment <= 0.5:
        raise ConfigError(f"train.shift_augment: must lie in [0, 0.5] (a share of each axis), got {t.shift_augment}")
    if not (math.isfinite(t.validation_fraction) and 0.0 <= t.validation_fraction <= 0.5):
        raise ConfigError(f"train.validation_fraction: must lie in [0, 0.5], got {t.validation_fraction}")


def _check_pretrained(cfg: ExperimentConfig) -> None:
    """The plain values of each `pretrained.<modality>` (its kind and params are checked against the
    registry of encoders after this, in `check_pretrained`)."""
    if len(cfg.pretrained) > MAX_PRETRAINED:
        raise ConfigError(f"pretrained: at most {MAX_PRETRAINED} encoders, got {len(cfg.pretrained)}")
    for modality, enc in cfg.pretrained.items():
        key = f"pretrained.{modality}"
        if not modality.strip() or any(c in modality for c in "/\\\0") or modality in (".", ".."):
            raise ConfigError(f"{key}: {modality!r} cannot name a modality")
        _int_range(f"{key}.batch_size", enc.batch_size, 1, MAX_BATCH)
        if "\0" in enc.weights:
            raise ConfigError(f"{key}.weights: must be a local path, got {enc.weights!r}")
        if not DEVICE.fullmatch(enc.device):
            raise ConfigError(f"{key}.device: expected auto, cpu, cuda, cuda:N or mps; got {enc.device!r}")


def _check_trainer(cfg: ExperimentConfig) -> None:
    tr = cfg.trainer
    if tr.accelerator not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator: unknown accelerator '{tr.accelerator}'; use one of {', '.join(ACCELERATORS)}")
    if tr.precision in CASTING_PRECISIONS:
        raise ConfigError(f"trainer.precision: '{tr.precision}' casts every parameter and buffer, which this library does not "
                          f"support for any model (the class statistics of moe and stats break under it); use "
                          f"{', '.join(PRECISIONS)} (mixed precision computes in 16 bits where it pays)")
    if tr.precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision: unknown precision '{tr.precision}'; use one of {', '.join(PRECISIONS)}")
    if not tr.strategy.strip() or any(c.isspace() for c in tr.strategy):
        raise ConfigError(f"trainer.strategy: must be a Lightning strategy name such as auto or ddp, got {tr.strategy!r}")
    parse_devices(tr.devices)
    _int_range("trainer.num_nodes", tr.num_nodes, 1, MAX_NODES)
    _int_range("trainer.log_every_n_steps", tr.log_every_n_steps, 1, 2**31 - 1)


def parse_devices(value: Any) -> Any:
    """`trainer.devices` as Lightning takes it: "auto", a count (-1: all), or a list of device indices."""
    text = str(value).strip()
    if text == "auto":
        return "auto"
    try:
        parsed = yaml.safe_load(text) if text and len(text) < 10_000 else None
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, str) and "," in parsed:  # "0,1" as Lightning accepts it
        try:
            parsed = [int(p) for p in parsed.split(",") if p.strip()]
        except ValueError:
            parsed = None
    if isinstance(parsed, bool):
        parsed = None
    if isinstance(parsed, int):
        if parsed == -1 or 1 <= parsed <= MAX_DEVICES:
            return parsed
        raise ConfigError(f"trainer.devices: a device count must lie in 1..{MAX_DEVICES} (or -1 for all), got {parsed}")
    if isinstance(parsed, list) and parsed and all(isinstance(d, int) and not isinstance(d, bool) for d in parsed):
        if any(d < 0 or d >= MAX_DEVICES for d in parsed) or len(set(parsed)) != len(parsed):
            raise ConfigError(f"trainer.devices: device indices must be distinct and lie in 0..{MAX_DEVICES - 1}, got {parsed}")
        return parsed
    raise ConfigError(f"trainer.devices: expected auto, a count such as 2, or a list such as [0,1]; got {value!r}")


def _int_range(key: str, value: int, low: int, high: int) -> None:
    if value < low:
        raise ConfigError(f"{key}: must be at least {low}, got {value}")
    if value > high:
        raise ConfigError(f"{key}: must be at most {high}, got {value}")


def _unit_interval(key: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ConfigError(f"{key}: must lie in [0, 1), got {value}")
