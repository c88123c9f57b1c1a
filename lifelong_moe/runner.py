"""The lifelong loop: for each experience, adapt the model, fit it with the strategy, evaluate it on every
test experience, and record R[i][j] with its metrics, figures, TensorBoard curves and a checkpoint."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong_moe.config import ExperimentConfig
from lifelong_moe.distributed import RUN_DIR_ENV, is_writer
from lifelong_moe.errors import Interrupted, UserError, first_line
from lifelong_moe.evaluation import Evaluator
from lifelong_moe.preparation import Prepared, build_model, build_strategy, comparable, prepare
from lifelong_moe.run_outputs import open_outputs
from lifelong_moe.run_state import RunState
from lifelong_moe.strategies.base import FitContext
from scenarios import Stream

__all__ = ["RunResult", "build_model", "build_strategy", "run"]


@dataclass
class RunResult:
    run_dir: Path
    accuracy_matrix: np.ndarray
    untrained_accuracy: list[float] | None
    metrics: dict[str, Any]
    results: dict[str, Any]


def run(cfg: ExperimentConfig, progress: Callable[[str], None] = print, resume: str | None = None) -> RunResult:
    """Run one lifelong experiment and write its outputs under `cfg.output.root/cfg.name/<version>`.
    With `resume`, continue the run in that directory from its last completed experience.

    Under DDP every process runs this loop (Lightning starts the others with the same command line);
    only the writer (global rank 0) creates files, and the others learn its run directory from
    the environment they inherit.

    Everything is checked (`prepare`) before anything is written. A run that stops after its directory
    exists (an error, SIGINT or SIGTERM) removes what this attempt made if it completed no experience, and
    otherwise keeps its last checkpoint and marks results.json; an interrupt is raised as `Interrupted`
    carrying where the run stopped. `trainer.cpu_threads` holds for the run; the caller's count returns after."""
    writer = is_writer()
    inherited = os.environ.get(RUN_DIR_ENV)
    threads = torch.get_num_threads()
    try:
        prepared = prepare(cfg, resume, progress if writer else (lambda _: None))
        return _run(prepared, progress if writer else (lambda _: None), writer)
    finally:
        torch.set_num_threads(threads)  # a later run or test in this process sums floats as it would alone
        if writer:  # the next run in this process must not inherit this one's directory
            if inherited is None:
                os.environ.pop(RUN_DIR_ENV, None)
            else:
                os.environ[RUN_DIR_ENV] = inherited


def _run(p: Prepared, progress: Callable[[str], None], writer: bool) -> RunResult:
    T = len(p.stream.experiences)
    outputs = open_outputs(p.cfg, p.stream, p.resume, writer, p.state.completed if p.state else 0, p.checkpoint_id)
    try:
        return _loop(p, outputs, progress)
    except (KeyboardInterrupt, Interrupted) as err:
        stop = err if isinstance(err, Interrupted) else Interrupted(signal.SIGINT)
        outputs.abandon("interrupted", f"interrupted by {stop.signal_name}")
        stop.run_dir, stop.completed, stop.total, stop.kept = str(outputs.run_dir), outputs.checkpointed, T, outputs.kept
        raise stop from None
    except UserError as err:  # e.g. the loss became NaN, or the disk is full: one line saying what is left
        outputs.abandon("failed", first_line(err))
        try:
            told = type(err)(f"{first_line(err)}; {outputs.where()}")
        except TypeError:  # a subclass with another signature
            told = UserError(f"{first_line(err)}; {outputs.where()}")
        raise told from None
    except BaseException as err:
        outputs.abandon("failed", f"{type(err).__name__}: {first_line(err)}")
        raise
    finally:
        outputs.release()


def _loop(p: Prepared, outputs: Any, progress: Callable[[str], None]) -> RunResult:
    cfg, stream, strategy, model, reference = p.cfg, p.stream, p.strategy, p.model, p.reference
    T = len(stream.experiences)
    evaluator = Evaluator(stream, cfg)
    if p.state is None:
        state = RunState.fresh(T, evaluator.untrained(model) if cfg.evaluate_untrained else None)
    else:
        state = p.state
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
        params.update(model.structure_summary())  # what training changed (e.g. how far shared experts drifted)
        t1 = time.perf_counter()
        # what is kept about past data, in bytes: stored samples (replay buffers) and statistics (the MoE's)
        params["stored_bytes"] = strategy.stored_samples(stream.train_stream, i) * sample_bytes(stream) + model.stored_bytes()
        header["memory_bytes"] = params["stored_bytes"]
        state.record(evaluator.after_experience(model, i), params, t0, t1, time.perf_counter())
        metrics, elapsed = state.metrics(stream), time.perf_counter() - start
        header["status"] = "running"  # "complete" only once the final evaluations and figures are written
        outputs.record(state, state.to_results(header, stream, metrics, elapsed),
                       state.to_checkpoint(comparable(cfg), model, elapsed, stream.data_files))
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

