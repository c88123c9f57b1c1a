"""The lifelong loop: for each experience, adapt the model, fit it with the strategy, evaluate it on every
test experience, and record R[i][j] with its metrics, figures, TensorBoard curves and a checkpoint."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from lifelong_moe.checkpointing import first_difference, load_checkpoint
from lifelong_moe.config import ExperimentConfig, to_container
from lifelong_moe.distributed import RUN_DIR_ENV, is_writer
from lifelong_moe.errors import ConfigError
from lifelong_moe.evaluation import Evaluator
from lifelong_moe.features import build_experiment_stream
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.registry import MODELS, STRATEGIES, resolve_params
from lifelong_moe.run_outputs import open_outputs
from lifelong_moe.run_state import RunState
from lifelong_moe.strategies.base import FitContext, Strategy
from scenarios import Stream


@dataclass
class RunResult:
    run_dir: Path
    accuracy_matrix: np.ndarray
    untrained_accuracy: list[float] | None
    metrics: dict[str, Any]
    results: dict[str, Any]


def build_model(cfg: ExperimentConfig, stream: Stream) -> ContinualModule:
    params = resolve_params(MODELS, cfg.model.name, cfg.model.params, "model.params")
    factory = MODELS.get(cfg.model.name, "model.name")
    return factory(params, n_classes=stream.n_classes, scenario=stream.scenario.value, train=cfg.train)


def build_strategy(cfg: ExperimentConfig) -> Strategy:
    params = resolve_params(STRATEGIES, cfg.strategy.name, cfg.strategy.params, "strategy.params")
    return STRATEGIES.get(cfg.strategy.name, "strategy.name")(params)


def run(cfg: ExperimentConfig, progress: Callable[[str], None] = print, resume: str | None = None) -> RunResult:
    """Run one lifelong experiment and write its outputs under `cfg.output.root/cfg.name/<version>`.
    With `resume`, continue the run in that directory from its last completed experience.

    Under DDP every process runs this loop (Lightning starts the others with the same command line);
    only the writer (global rank 0) creates files, and the others learn its run directory from
    the environment they inherit."""
    writer = is_writer()
    inherited = os.environ.get(RUN_DIR_ENV)
    try:
        return _run(cfg, progress if writer else (lambda _: None), resume, writer)
    finally:
        if writer:  # the next run in this process must not inherit this one's directory
            if inherited is None:
                os.environ.pop(RUN_DIR_ENV, None)
            else:
                os.environ[RUN_DIR_ENV] = inherited


def _run(cfg: ExperimentConfig, progress: Callable[[str], None], resume: str | None, writer: bool) -> RunResult:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.cpu_threads:
        torch.set_num_threads(cfg.trainer.cpu_threads)
    stream = build_experiment_stream(cfg, progress)  # the stream, with pretrained features where configured
    T = len(stream.experiences)
    reference = _reference_diagonal(cfg.reference_results, T)
    strategy = build_strategy(cfg)
    strategy.check(cfg.trainer, resume is not None)
    checkpoint = _resumable(resume, cfg, T) if resume else None
    outputs = open_outputs(cfg, stream, resume, writer)
    model = build_model(cfg, stream)
    evaluator = Evaluator(stream, cfg)
    if checkpoint is None:
        state = RunState.fresh(T, evaluator.untrained(model) if cfg.evaluate_untrained else None)
    else:
        state = RunState.from_checkpoint(checkpoint, model)
        progress(f"[lifelong-moe] resuming {outputs.run_dir} after experience {state.completed}/{T}")
    header = {"experiment": cfg.name, "seed": cfg.seed, "status": "running", "model": cfg.model.name,
              "strategy": cfg.strategy.name, "memory": strategy.memory}  # memory: what it keeps of past experiences
    start = time.perf_counter() - state.elapsed_s

    for i in range(state.completed, T):
        exp = stream.train_stream[i]
        t0 = time.perf_counter()
        model.on_experience_start(exp)
        params = {**model.parameter_counts(), **model.structure_summary()}
        strategy.fit(model, stream.train_stream, i, FitContext(cfg.train, cfg.trainer, cfg.seed * 1000 + i, outputs.logger))
        model.on_experience_end(exp)
        t1 = time.perf_counter()
        # what is kept about past data, in bytes: stored samples (replay buffers) and statistics (the MoE's)
        params["stored_bytes"] = strategy.stored_samples(stream.train_stream, i) * sample_bytes(stream) + model.stored_bytes()
        header["memory_bytes"] = params["stored_bytes"]
        state.record(evaluator.after_experience(model, i), params, t0, t1, time.perf_counter())
        metrics, elapsed = state.metrics(stream), time.perf_counter() - start
        header["status"] = "complete" if i == T - 1 else "running"
        outputs.record(state, state.to_results(header, stream, metrics, elapsed),
                       state.to_checkpoint(_comparable(cfg), model, elapsed))
        progress(f"[lifelong-moe] experience {i + 1}/{T} ({exp.spec.name}) | {elapsed:6.1f}s elapsed | "
                 f"ACC {metrics['acc']:.3f} | acc on {exp.spec.name} {state.R[i, i]:.3f}")

    state.robustness = evaluator.robustness(model)
    metrics = state.metrics(stream, reference)
    results = state.to_results({**header, "status": "complete"}, stream, metrics, time.perf_counter() - start)
    outputs.finish(state, results, cfg)
    progress(f"[lifelong-moe] done in {results['wall_time_s']:.1f}s | ACC {metrics['acc']:.3f} | results in {outputs.run_dir}")
    return RunResult(outputs.run_dir, state.R, state.b, metrics, results)


def sample_bytes(stream: Stream) -> int:
    """Bytes of one stored training sample: every modality's array, its presence flag and the label."""
    return sum(math.prod(s.shape) * torch.empty((), dtype=getattr(torch, s.dtype)).element_size() + 1
               for s in stream.modalities.values()) + 8


def _reference_diagonal(path: str | None, T: int) -> list[float] | None:
    """a*_k for intransigence: the diagonal of a joint run's accuracy matrix."""
    if path is None:
        return None
    try:
        ref = json.loads(Path(path).read_text())
        R = np.asarray(ref["accuracy_matrix"], dtype=float)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"reference_results: cannot read an accuracy matrix from {path} ({err})") from None
    if R.shape != (T, T):
        raise ConfigError(f"reference_results: {path} has a {R.shape} accuracy matrix; this stream needs {T}x{T}")
    return [float(R[k, k]) for k in range(T)]


def _comparable(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as a resumed run must match it: where outputs go may change, nothing else."""
    container = to_container(cfg)
    container.pop("output", None)
    return container


def _resumable(resume: str, cfg: ExperimentConfig, T: int) -> dict[str, Any]:
    checkpoint = load_checkpoint(resume)
    where = first_difference(checkpoint["config"], _comparable(cfg))
    if where is not None:
        raise ConfigError(f"--resume: {resume} was made by another config (it differs at {where})")
    if checkpoint["completed"] >= T:
        raise ConfigError(f"--resume: {resume} already completed all {T} experiences")
    return checkpoint
