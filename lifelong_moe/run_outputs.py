"""Where a run's results go: the run directory (config, checkpoint, results.json, CSV, figures) and
TensorBoard. Only the writing process (global rank 0) writes; the others get `NullOutputs`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger

from lifelong_moe.checkpointing import save_checkpoint
from lifelong_moe.config import ExperimentConfig, to_container, to_yaml
from lifelong_moe.distributed import RUN_DIR_ENV
from lifelong_moe.reporting.files import atomic_write_text, new_run_dir, write_csv, write_json
from lifelong_moe.reporting.plots import (
    accuracy_matrix_figure,
    forgetting_curves_figure,
    modality_robustness_figure,
    routing_mass_figure,
    save_figure,
)
from lifelong_moe.reporting.tensorboard import StreamBoard
from lifelong_moe.run_state import RunState
from scenarios import Stream


class RunOutputs:
    """The run directory and its TensorBoard logger (one event file for the stream's curves)."""

    def __init__(self, run_dir: Path, stream: Stream) -> None:
        self.run_dir = run_dir
        self.names = [e.name for e in stream.experiences]
        self.logger: Any = TensorBoardLogger(save_dir=run_dir.parent.parent, name=run_dir.parent.name, version=run_dir.name,
                                             default_hp_metric=False)
        self.board = StreamBoard(self.logger, len(stream.experiences))

    def record(self, state: RunState, results: dict[str, Any], checkpoint: dict[str, Any]) -> None:
        """After experience i: its curves, then the checkpoint (what a resumed run trusts), then results.json."""
        i = state.completed - 1
        self.board.log_modality(i, state.modality[-1])
        self.board.log_step(i, state.R, state.b, self.names)
        self.board.log_report(i, state.reports[-1], self.names)
        save_checkpoint(self.run_dir, checkpoint)
        write_json(self.run_dir / "results.json", results)

    def finish(self, state: RunState, results: dict[str, Any], cfg: ExperimentConfig) -> None:
        """results.json, the accuracy matrix as CSV, the figures, and TensorBoard's hparams."""
        R, names = state.R, self.names
        write_json(self.run_dir / "results.json", results)
        write_csv(self.run_dir / "accuracy_matrix.csv", ["after_experience", *names], [[names[i], *map(float, R[i])] for i in range(len(R))])
        if cfg.output.plots:
            save_figure(accuracy_matrix_figure(R, names), self.run_dir / "accuracy_matrix.png")
            save_figure(forgetting_curves_figure(R, results["metrics"]["seen_acc"], names), self.run_dir / "forgetting_curves.png")
            if "routing_mass" in state.reports[-1]:
                save_figure(routing_mass_figure(state.reports[-1], names), self.run_dir / "routing_mass.png")
            if state.robustness:
                save_figure(modality_robustness_figure(state.robustness), self.run_dir / "modality_robustness.png")
        self.board.log_robustness(state.robustness or {}, len(R) - 1)
        self.board.log_final(_flat(to_container(cfg)), results["metrics"])
        self.logger.finalize("success")


class NullOutputs:
    """What a non-writing process has instead: nothing is written, and fits log nowhere."""

    logger: Any = False

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def record(self, state: RunState, results: dict[str, Any], checkpoint: dict[str, Any]) -> None:
        pass

    def finish(self, state: RunState, results: dict[str, Any], cfg: ExperimentConfig) -> None:
        pass


def open_outputs(cfg: ExperimentConfig, stream: Stream, resume_dir: str | None, writer: bool) -> RunOutputs | NullOutputs:
    """The writer claims a new run directory (or reopens the resumed one) and tells the other processes
    where it is through the environment they inherit; the others read it from there."""
    if not writer:
        return NullOutputs(Path(os.environ.get(RUN_DIR_ENV, "")))
    if resume_dir is not None:
        run_dir = Path(resume_dir)
    else:
        run_dir, _ = new_run_dir(cfg.output.root, cfg.name, cfg.output.version)
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return RunOutputs(run_dir, stream)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as flat `a.b.c` hyperparameters for TensorBoard."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
