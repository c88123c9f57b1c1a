"""The lifelong loop: for each experience, adapt the model, fit it with a fresh Trainer, evaluate it on
every test experience, and record R[i][j] with its metrics, figures and TensorBoard curves."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lifelong_moe.checkpointing import first_difference, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from lifelong_moe.config import ExperimentConfig, to_container, to_yaml
from lifelong_moe.distributed import RUN_DIR_ENV, is_writer
from lifelong_moe.errors import ConfigError
from lifelong_moe.features import build_experiment_stream
from lifelong_moe.metrics import summarize
from lifelong_moe.modality_eval import (
    missing_rate_accuracy,
    single_modality_accuracy,
    stream_modalities,
    subset_accuracy,
    token_share,
)
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.registry import MODELS, STRATEGIES, resolve_params
from lifelong_moe.reporting.files import atomic_write_text, new_run_dir, write_csv, write_json
from lifelong_moe.reporting.plots import (
    accuracy_matrix_figure,
    forgetting_curves_figure,
    modality_robustness_figure,
    routing_mass_figure,
    save_figure,
)
from lifelong_moe.reporting.tensorboard import StreamBoard
from lifelong_moe.strategies.base import FitContext, Strategy
from lifelong_moe.training import eval_loaders, evaluate
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


def untrained_accuracy(model: ContinualModule, stream: Stream, loaders: list[Any], cfg: ExperimentConfig) -> list[float]:
    """b[j]: a copy of the untrained model, grown for every experience, evaluated on each (for FWT).
    The global RNG is forked so the real model's later growth is unaffected."""
    with torch.random.fork_rng(devices=[]):
        reference = copy.deepcopy(model)
        for exp in stream.train_stream:
            reference.on_experience_start(exp)
        return evaluate(reference, loaders, cfg.trainer)


def _reference_diagonal(path: str | None, T: int) -> list[float] | None:
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


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


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
    stream = build_experiment_stream(cfg, progress)  # the stream, with pretrained features where configured
    T = len(stream.experiences)
    reference_diag = _reference_diagonal(cfg.reference_results, T)
    strategy = build_strategy(cfg)
    strategy.check(cfg.trainer, resume is not None)
    checkpoint = _resumable(resume, cfg, T) if resume else None
    if checkpoint is not None:
        run_dir = Path(resume)
    elif writer:
        run_dir, _version = new_run_dir(cfg.output.root, cfg.name, cfg.output.version)
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    else:
        run_dir = Path(os.environ.get(RUN_DIR_ENV, ""))
    if writer:
        os.environ[RUN_DIR_ENV] = str(run_dir)
        logger = TensorBoardLogger(save_dir=run_dir.parent.parent, name=run_dir.parent.name, version=run_dir.name,
                                   default_hp_metric=False)
        board = StreamBoard(logger, T)
    names = [e.name for e in stream.experiences]
    test_sizes = [e.n_test for e in stream.experiences]
    modalities = stream_modalities(stream)

    model = build_model(cfg, stream)
    loaders = eval_loaders(stream.test_stream, cfg.train)
    if checkpoint is None:
        b = untrained_accuracy(model, stream, loaders, cfg) if cfg.evaluate_untrained else None
        R = np.full((T, T), np.nan)
        timing: list[dict[str, float]] = []
        params: list[dict[str, Any]] = []
        reports: list[dict[str, Any]] = []
        modality_records: list[dict[str, Any]] = []
        first, elapsed_before = 0, 0.0
    else:
        model.restore_structure(checkpoint["structure"])  # grow first, then load the weights
        model.load_state_dict(checkpoint["model"])
        model.apply_trainable(checkpoint["structure"]["trainable"])
        b, R = checkpoint["b"], np.asarray(checkpoint["R"], dtype=float)
        timing, params, reports = checkpoint["timing"], checkpoint["params"], checkpoint["reports"]
        modality_records = checkpoint.get("modality", [])
        first, elapsed_before = checkpoint["completed"], checkpoint["elapsed_s"]
        set_rng_state(checkpoint["rng"])
        progress(f"[lifelong-moe] resuming {run_dir} after experience {first}/{T}")

    results: dict[str, Any] = {}
    start = time.perf_counter() - elapsed_before
    for i in range(first, T):
        exp = stream.train_stream[i]
        t0 = time.perf_counter()
        model.on_experience_start(exp)
        params.append({**model.parameter_counts(), **model.structure_summary()})
        strategy.fit(model, stream.train_stream, i,
                     FitContext(cfg.train, cfg.trainer, seed=cfg.seed * 1000 + i, logger=logger if writer else False))
        model.on_experience_end(exp)
        t1 = time.perf_counter()
        R[i] = evaluate(model, loaders, cfg.trainer)
        reports.append(model.evaluation_report())
        modality_records.append(_modality_record(model, stream, i, modalities, cfg))
        t2 = time.perf_counter()
        timing.append({"train_s": t1 - t0, "eval_s": t2 - t1, "total_s": t2 - t0})
        metrics = summarize(R[: i + 1, : i + 1], b[: i + 1] if b else None, test_sizes[: i + 1])
        results = _results(cfg, stream, R, b, metrics, timing, params, reports, strategy.memory,
                           status="complete" if i == T - 1 else "running")
        results["modality_per_experience"] = modality_records
        if writer:
            board.log_modality(i, modality_records[-1])
            _write_experience(run_dir, board, i, R, b, names, reports, results, {
                "config": _comparable(cfg), "completed": i + 1, "structure": model.structure_state(),
                "model": model.state_dict(), "R": R.tolist(), "b": b, "timing": timing, "params": params,
                "reports": reports, "modality": modality_records, "elapsed_s": time.perf_counter() - start,
                "rng": rng_state(),
            })
        progress(
            f"[lifelong-moe] experience {i + 1}/{T} ({names[i]}) | {time.perf_counter() - start:6.1f}s elapsed | "
            f"ACC {metrics['acc']:.3f} | acc on {names[i]} {R[i, i]:.3f}"
        )

    robustness = _robustness(model, stream, modalities, cfg)
    metrics = summarize(R, b, test_sizes, reference_diag)
    results = _results(cfg, stream, R, b, metrics, timing, params, reports, strategy.memory, status="complete")
    results["modality_per_experience"] = modality_records
    results["modality_evaluation"] = robustness
    results["wall_time_s"] = time.perf_counter() - start
    if not writer:
        return RunResult(run_dir, R, b, metrics, results)
    write_json(run_dir / "results.json", results)
    write_csv(run_dir / "accuracy_matrix.csv", ["after_experience", *names], [[names[i], *map(float, R[i])] for i in range(T)])
    if cfg.output.plots:
        save_figure(accuracy_matrix_figure(R, names), run_dir / "accuracy_matrix.png")
        save_figure(forgetting_curves_figure(R, metrics["seen_acc"], names), run_dir / "forgetting_curves.png")
        if "routing_mass" in reports[-1]:
            save_figure(routing_mass_figure(reports[-1], names), run_dir / "routing_mass.png")
        if robustness:
            save_figure(modality_robustness_figure(robustness), run_dir / "modality_robustness.png")
    board.log_robustness(robustness, T - 1)
    board.log_final(_flat(to_container(cfg)), metrics)
    logger.finalize("success")
    progress(f"[lifelong-moe] done in {results['wall_time_s']:.1f}s | ACC {metrics['acc']:.3f} | results in {run_dir}")
    return RunResult(run_dir, R, b, metrics, results)


def _modality_record(model: ContinualModule, stream: Stream, i: int, modalities: list[str], cfg: ExperimentConfig) -> dict[str, Any]:
    """Imbalance statistics after experience i: each modality's share of its training tokens, and (if set)
    the accuracy of each modality alone over every test experience."""
    record: dict[str, Any] = {"token_share": token_share(stream.train_stream[i].dataset, modalities)}
    if cfg.modality_eval.single_each_experience and len(modalities) > 1:
        state = rng_state()  # extra evaluations must not change what the run trains next
        record["single_modality"] = single_modality_accuracy(model, stream.test_stream, modalities, cfg)
        set_rng_state(state)
    return record


def _robustness(model: ContinualModule, stream: Stream, modalities: list[str], cfg: ExperimentConfig) -> dict[str, Any]:
    """After the last experience: accuracy per subset of modalities and against the missing rate."""
    out: dict[str, Any] = {}
    if cfg.modality_eval.subsets and len(modalities) > 1:
        out["subsets"] = subset_accuracy(model, stream.test_stream, modalities, cfg)
    if cfg.modality_eval.missing_rates:
        out["missing_rate"] = missing_rate_accuracy(model, stream.test_stream, modalities, cfg)
    return out


def _write_experience(run_dir: Path, board: StreamBoard, i: int, R: np.ndarray, b: list[float] | None, names: list[str],
                      reports: list[dict[str, Any]], results: dict[str, Any], checkpoint: dict[str, Any]) -> None:
    board.log_step(i, R, b, names)
    board.log_report(i, reports[-1], names)
    # the checkpoint first: it is what a resumed run trusts, results.json only reports
    save_checkpoint(run_dir, checkpoint)
    write_json(run_dir / "results.json", results)


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


def _results(cfg: ExperimentConfig, stream: Stream, R: np.ndarray, b: list[float] | None, metrics: dict[str, Any],
             timing: list[dict[str, float]], params: list[dict[str, Any]], reports: list[dict[str, Any]],
             memory: str, status: str) -> dict[str, Any]:
    return {
        "experiment": cfg.name,
        "seed": cfg.seed,
        "status": status,
        "scenario": stream.scenario.value,
        "model": cfg.model.name,
        "strategy": cfg.strategy.name,
        "memory": memory,  # what the strategy keeps of past experiences
        "completed_experiences": len(timing),
        "experiences": [
            {"name": e.name, "source": e.source, "classes": e.classes, "modalities": e.modalities,
             "task_label": e.task_label, "n_train": e.n_train, "n_test": e.n_test}
            for e in stream.experiences
        ],
        "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in row] for row in R],
        "untrained_accuracy": b,
        "metrics": metrics,
        "time_per_experience_s": timing,
        "parameters_per_experience": params,
        "evaluations": reports,  # per training step: model-specific records, e.g. routing statistics
    }
