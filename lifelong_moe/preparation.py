"""Everything a run checks before it writes anything, as one step shared by `run` and `lifelong-moe
validate`: the stream (every data file read and checked), the reference results, the strategy and its
compatibility with the Trainer settings, Lightning's own acceptance of those settings on this machine,
the model rehearsed through every experience without training (growth, new modalities' encoders, one
forward pass of a train and a test batch per experience, the class statistics), and for a resume the checkpoint
(safe to load, same config, same data files, fitting the model). A config that passes `prepare` fails
in `run` only in training itself (e.g. a loss that becomes NaN).

The rehearsal and the Trainer check run on a copy of the random-number states, so `run` draws exactly
the numbers it drew before these checks existed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from lifelong_moe.checkpointing import (
    checkpoint_identity,
    fingerprint_changes,
    first_difference,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from lifelong_moe.config import ExperimentConfig, to_container
from lifelong_moe.distributed import is_writer
from lifelong_moe.errors import ConfigError, UserError, first_line
from lifelong_moe.features import build_experiment_stream
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.models.encoders import ENCODERS
from lifelong_moe.registry import MODELS, STRATEGIES, resolve_params
from lifelong_moe.run_state import RunState
from lifelong_moe.strategies.base import Strategy
from lifelong_moe.training import make_trainer
from scenarios import Stream


@dataclass
class Prepared:
    """A checked run, ready to write: `state` is set when resuming (the model already restored)."""

    cfg: ExperimentConfig
    stream: Stream
    strategy: Strategy
    model: ContinualModule
    reference: list[float] | None
    resume: str | None
    state: RunState | None
    grown: dict[str, int]  # parameter counts of the rehearsed model after the last experience
    checkpoint_id: tuple[int, int, int] | None = None  # the resumed checkpoint as it was checked (inode, size, mtime)


def build_model(cfg: ExperimentConfig, stream: Stream) -> ContinualModule:
    params = resolve_params(MODELS, cfg.model.name, cfg.model.params, "model.params")
    factory = MODELS.get(cfg.model.name, "model.name")
    return factory(params, n_classes=stream.n_classes, scenario=stream.scenario.value, train=cfg.train)


def build_strategy(cfg: ExperimentConfig) -> Strategy:
    params = resolve_params(STRATEGIES, cfg.strategy.name, cfg.strategy.params, "strategy.params")
    return STRATEGIES.get(cfg.strategy.name, "strategy.name")(params)


def comparable(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as a resumed run must match it: where outputs go may change, nothing else."""
    container = to_container(cfg)
    container.pop("output", None)
    return container


def prepare(cfg: ExperimentConfig, resume: str | None = None, progress: Callable[[str], None] = print,
            encode: bool = True) -> Prepared:
    """Check everything `run` needs, in the order `run` draws random numbers; write nothing under
    `output.root` (pretrained features may be computed and cached, as `run` would). With `encode=False`
    (validate), pretrained features missing from the cache are not computed: the encoder runs on a few
    samples, and features of its width stand in for the rest."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.cpu_threads:
        torch.set_num_threads(cfg.trainer.cpu_threads)
    stream = build_experiment_stream(cfg, progress, encode)  # validation carved out; pretrained features in place
    classes = sorted({c for e in stream.experiences for c in e.classes})
    if len(classes) < 2:
        raise ConfigError(f"stream: its experiences hold only class {classes}; a classification stream needs at least two classes")
    T = len(stream.experiences)
    reference = reference_diagonal(cfg.reference_results, T)
    strategy = build_strategy(cfg)
    strategy.check(cfg.trainer, resume is not None)
    checkpoint_id = checkpoint_identity(resume) if resume is not None else None  # before reading: a later write shows
    checkpoint = resumable(resume, cfg, stream) if resume is not None else None
    if resume is None and is_writer():  # under DDP the others start once rank 0 has made the directory
        check_output(cfg)
    check_modality_kinds(stream)
    with preserved_rng():
        check_trainer(cfg)
        grown = rehearse(cfg, stream)
    model = build_model(cfg, stream)
    state = None
    if checkpoint is not None:
        try:
            state = RunState.from_checkpoint(checkpoint, model)
        except UserError:
            raise
        except Exception as err:  # the checkpoint is outside input: a mismatch is the user's, not a bug
            raise ConfigError(f"--resume: {resume}'s checkpoint does not fit the model ({type(err).__name__}: "
                              f"{first_line(err)[:200]})") from None
    return Prepared(cfg, stream, strategy, model, reference, resume, state, grown, checkpoint_id)


def check_output(cfg: ExperimentConfig) -> None:
    """What `run` will need of `output.*` to create its directory, checked without creating anything."""
    base = Path(cfg.output.root) / cfg.name
    if cfg.output.version is not None and (base / cfg.output.version).exists():
        raise ConfigError(f"output.version: {base / cfg.output.version} already holds a run; choose another version or remove it")
    existing = next((p for p in (base, *base.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"output.root: cannot create {base}: {existing} is not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output.root: cannot create {base}: {existing} is not writable")


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Every global random-number state (torch, CUDA, numpy, Python) as it was before the block."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def check_modality_kinds(stream: Stream) -> None:
    """Every modality of the stream has a kind some encoder reads; the error names the source."""
    for e in stream.experiences:
        for m in e.modalities:
            kind = stream.modalities[m].kind
            if kind not in ENCODERS:
                raise ConfigError(f"stream.sources.{e.source}: modality '{m}' has kind '{kind}', for which no encoder "
                                  f"is registered; known kinds: {', '.join(ENCODERS)}")


_TRAINER_KEYS = ("accelerator", "devices", "strategy", "precision", "num_nodes")


def check_trainer(cfg: ExperimentConfig) -> None:
    """Build the fit and evaluation Trainers once: Lightning refuses settings this machine cannot run
    (e.g. a GPU accelerator without a GPU) here, with the setting named, instead of inside the run."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    for evaluation in (False, True):
        try:
            make_trainer(cfg.trainer, logger=False, progress=False, evaluation=evaluation, conditional_parameters=True)
        except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError, AttributeError) as err:
            text = first_line(err)
            lowered = text.lower()
            flat = lowered.replace("_", "")
            named = [(flat.find(k.replace("_", "")), k) for k in _TRAINER_KEYS if k.replace("_", "") in flat]
            key = min(named)[1] if named else None  # the setting the message names first ("devices selected with CPUAccelerator")
            if key is None and ("gpu" in lowered or "cuda" in lowered or "device" in lowered):
                key = "accelerator"
            raise ConfigError(f"trainer.{key or 'strategy'}: Lightning refuses these settings: {text[:300]}") from None


def rehearse(cfg: ExperimentConfig, stream: Stream) -> dict[str, int]:
    """Grow a throwaway model through every experience as the run will (`on_experience_start`,
    `on_experience_end`, one forward pass of a train and a test batch) without training it: encoders for every
    modality, growth decisions and shape or dtype mismatches between data and model surface here."""
    model = build_model(cfg, stream)
    model.rehearsing = True  # closed-form fits (the MoE's class statistics) would cost as much as in the run
    for exp, test in zip(stream.train_stream, stream.test_stream):
        where = f"experience {exp.index + 1} ({exp.spec.name})"
        try:
            model.on_experience_start(exp)
            model.on_experience_end(exp)
            for dataset in (exp.dataset, test.dataset):  # as the evaluator will see them
                _forward_one_batch(model, dataset)
        except UserError as err:
            raise type(err)(f"{err} (at {where})") from None
        except Exception as err:
            raise ConfigError(f"model.name: model '{cfg.model.name}' cannot take {where} of this stream "
                              f"({type(err).__name__}: {first_line(err)[:200]})") from None
    return model.parameter_counts()


@torch.no_grad()
def _forward_one_batch(model: ContinualModule, dataset: Any) -> None:
    loader = DataLoader(dataset, batch_size=2, shuffle=False, collate_fn=getattr(dataset, "collate_fn", None))
    x, _, t = next(iter(loader))
    was_training = model.training
    model.eval()
    try:
        model(x, t)
    finally:
        model.train(was_training)


def reference_diagonal(path: str | None, T: int) -> list[float] | None:
    """a*_k for intransigence: the diagonal of a joint run's accuracy matrix (its results.json)."""
    if path is None:
        return None
    where = f"reference_results: {path}"
    try:
        with open(path, "rb") as fh:
            data = fh.read(64 * 2**20 + 1)
        if len(data) > 64 * 2**20:
            raise ConfigError(f"{where}: larger than 64 MiB; give the results.json of a run")
        ref = json.loads(data.decode("utf-8"))
    except UserError:
        raise
    except (OSError, ValueError, RecursionError) as err:  # unreadable, not UTF-8, not JSON, nested too deep
        raise ConfigError(f"{where}: not a readable results.json ({type(err).__name__}: {first_line(err)[:200]})") from None
    if not isinstance(ref, dict) or "accuracy_matrix" not in ref:
        raise ConfigError(f"{where}: no 'accuracy_matrix' in it (expected a run's results.json, an object)")
    try:
        R = np.asarray(ref["accuracy_matrix"], dtype=float)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: 'accuracy_matrix' is not a matrix of numbers ({first_line(err)[:200]})") from None
    if R.shape != (T, T):
        raise ConfigError(f"{where}: has a {R.shape} accuracy matrix; this stream needs {T}x{T}")
    diagonal = [float(R[k, k]) for k in range(T)]
    if not all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in diagonal):
        raise ConfigError(f"{where}: the diagonal of its accuracy matrix must hold accuracies in [0, 1], got {diagonal}")
    return diagonal


def resumable(resume: str, cfg: ExperimentConfig, stream: Stream) -> dict[str, Any]:
    """The checkpoint of `resume`, if this config, stream and data may continue it."""
    checkpoint = load_checkpoint(resume)
    where = first_difference(checkpoint["config"], comparable(cfg))
    if where is not None:
        raise ConfigError(f"--resume: {resume} was made by another config (it differs at {where})")
    T, completed = len(stream.experiences), checkpoint["completed"]
    R = checkpoint["R"]
    if completed > T or len(R) != T or any(not isinstance(row, list) or len(row) != T for row in R):
        raise ConfigError(f"--resume: {resume}'s checkpoint does not fit this stream of {T} experiences")
    if completed == T and _status(Path(resume)) == "complete":
        raise ConfigError(f"--resume: {resume} already completed all {T} experiences")
    changed = fingerprint_changes(checkpoint["data_files"], stream.data_files)
    if changed:
        raise ConfigError(f"--resume: {changed}")
    return checkpoint


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "results.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
