"""Where a run's results go: the run directory (config, checkpoint, results.json, CSV, figures) and
TensorBoard. Only the writing process (global rank 0) writes; the others get `NullOutputs`.

A run that stops early (an error, an interrupt) leaves an honest directory behind (`abandon`): if this
attempt completed no experience, what it made is removed (a new run's whole directory; a resumed run's
new files, never its checkpoint); otherwise the last checkpoint stays and results.json says why it stopped."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger

from lifelong_moe.checkpointing import CHECKPOINT, checkpoint_identity, save_checkpoint
from lifelong_moe.config import ExperimentConfig, to_container, to_yaml
from lifelong_moe.distributed import RUN_DIR_ENV
from lifelong_moe.errors import ConfigError, OutputError, UserError
from lifelong_moe.interrupts import deferred
from lifelong_moe.reporting.files import (
    ClaimedDir,
    RunLock,
    atomic_write_text,
    claim_run_dir,
    lock_run_dir,
    write_csv,
    write_json,
)
from lifelong_moe.reporting.plots import (
    accuracy_matrix_figure,
    class_accuracy_figure,
    confusion_matrix_figure,
    experience_labels,
    forgetting_curves_figure,
    modality_robustness_figure,
    routing_mass_figure,
    save_figure,
)
from lifelong_moe.reporting.tensorboard import StreamBoard
from lifelong_moe.run_state import RunState
from scenarios import Stream

PREPARATION = "preparation.json"  # the stream's modalities and how each source prepared them (`lifelong-moe predict`)


class RunOutputs:
    """The run directory and its TensorBoard logger (one event file for the stream's curves)."""

    def __init__(self, run_dir: Path, stream: Stream, lock: RunLock, claimed: ClaimedDir | None = None, completed: int = 0) -> None:
        self.run_dir = run_dir
        self.lock = lock  # this process's claim on the directory, released by `release`
        self.claimed = claimed  # set for a new run: the directory this process created
        self.checkpoint_id = checkpoint_identity(run_dir)  # the checkpoint as this process last saw or wrote it
        self.before = {p.name for p in run_dir.iterdir()}  # a resumed run's files, which a failure must keep
        self.started_at = self.checkpointed = completed  # experiences in the checkpoint: at the start, and now
        self.kept = True
        self.names = [e.name for e in stream.experiences]
        self.class_names = stream.names_of_classes()
        # in figures: experience names with their classes' names, where the classes have names
        self.labels = experience_labels(self.names, [[stream.class_name(c) for c in e.classes] for e in stream.experiences])
        self.logger: Any = TensorBoardLogger(save_dir=run_dir.parent.parent, name=run_dir.parent.name, version=run_dir.name,
                                             default_hp_metric=False)
        self.board = StreamBoard(self.logger, len(stream.experiences))

    def record(self, state: RunState, results: dict[str, Any], checkpoint: dict[str, Any]) -> None:
        """After experience i: its curves, then the checkpoint (what a resumed run trusts), then results.json."""
        i = state.completed - 1
        self.board.log_modality(i, state.modality[-1])
        self.board.log_step(i, state.R, state.b, self.labels)
        self.board.log_report(i, state.reports[-1], self.labels)
        self.board.log_classes(i, state.per_class[-1], self.class_names)
        self.board.log_contributions(i, results.get("contributions", {}))
        if checkpoint_identity(self.run_dir) != self.checkpoint_id:  # never replace what someone else wrote
            raise OutputError(f"{self.run_dir / CHECKPOINT} was replaced by something other than this run; it is left as "
                              f"it is, with experience {state.completed}'s results unsaved")
        with deferred():  # an interrupt waits until the checkpoint and results.json agree
            save_checkpoint(self.run_dir, checkpoint)
            self.checkpoint_id = checkpoint_identity(self.run_dir)
            self.checkpointed = state.completed
            write_json(self.run_dir / "results.json", results)

    def finish(self, state: RunState, results: dict[str, Any], cfg: ExperimentConfig) -> None:
        """results.json, the accuracy matrix as CSV, the figures, and TensorBoard's hparams."""
        R, names, labels = state.R, self.names, self.labels
        write_json(self.run_dir / "results.json", results)
        write_csv(self.run_dir / "accuracy_matrix.csv", ["after_experience", *names], [[names[i], *map(float, R[i])] for i in range(len(R))])
        write_csv(self.run_dir / "class_accuracy.csv", ["label", "class", "test_samples", *[f"after_{n}" for n in names]],
                  class_accuracy_rows(state.per_class, self.class_names))
        if cfg.output.plots:
            save_figure(accuracy_matrix_figure(R, labels), self.run_dir / "accuracy_matrix.png")
            save_figure(forgetting_curves_figure(R, results["metrics"]["seen_acc"], labels), self.run_dir / "forgetting_curves.png")
            if state.per_class and state.per_class[-1]:
                save_figure(confusion_matrix_figure(np.asarray(state.per_class[-1]["confusion_matrix"]), self.class_names,
                                                    f"confusion matrix after {names[-1]}"), self.run_dir / "confusion_matrix.png")
                blank = [None] * len(self.class_names)  # steps of a run resumed from a checkpoint that had no per-class record
                save_figure(class_accuracy_figure([r.get("accuracy", blank) for r in state.per_class], self.class_names, names),
                            self.run_dir / "class_accuracy.png")
            if "routing_mass" in state.reports[-1]:
                save_figure(routing_mass_figure(state.reports[-1], labels), self.run_dir / "routing_mass.png")
            if state.robustness:
                save_figure(modality_robustness_figure(state.robustness), self.run_dir / "modality_robustness.png")
        self.board.log_robustness(state.robustness or {}, len(R) - 1)
        self.board.log_final(_flat(to_container(cfg)), results["metrics"])
        self.logger.finalize("success")


    def abandon(self, status: str, reason: str) -> None:
        """The run stops here (`status`: failed or interrupted). Best effort: a full disk must not hide why;
        a second interrupt meanwhile is ignored."""
        with deferred(drop=True):
            self._abandon(status, reason)

    def _abandon(self, status: str, reason: str) -> None:
        for close in (self.board.writer.close, lambda: self.logger.finalize("failed")):
            with contextlib.suppress(Exception):  # the reason the run stopped matters more
                close()
        if self.checkpointed == self.started_at:  # this attempt completed nothing: remove what it made
            if self.claimed is not None:
                self.claimed.remove()
                self.kept = False
            else:
                for p in self.run_dir.iterdir():
                    if p.name not in self.before:
                        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            return
        path = self.run_dir / "results.json"
        try:
            results = json.loads(path.read_text())
            results.update(status=status, error=reason)
            write_json(path, results)
        except (OSError, ValueError, AttributeError, UserError):
            pass  # best effort: results.json stays as the last experience wrote it

    def release(self) -> None:
        """Let other processes claim the directory (the run is over, whichever way it ended)."""
        self.lock.release()

    def where(self) -> str:
        """Where the run stands, for the one line that reports its end."""
        if not self.kept:
            return f"nothing was kept ({self.run_dir} removed)"
        if self.checkpointed == self.started_at and self.claimed is None:
            return f"{self.run_dir} is as it was"
        return f"{self.run_dir} keeps {self.checkpointed} completed experience(s)"


class NullOutputs:
    """What a non-writing process has instead: nothing is written, and fits log nowhere."""

    logger: Any = False

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def record(self, state: RunState, results: dict[str, Any], checkpoint: dict[str, Any]) -> None:
        pass

    def finish(self, state: RunState, results: dict[str, Any], cfg: ExperimentConfig) -> None:
        pass

    def abandon(self, status: str, reason: str) -> None:
        pass

    def release(self) -> None:
        pass

    def where(self) -> str:
        return f"{self.run_dir} is written by rank 0"


def open_outputs(cfg: ExperimentConfig, stream: Stream, resume_dir: str | None, writer: bool,
                 completed: int = 0, checkpoint_id: tuple[int, int, int] | None = None) -> RunOutputs | NullOutputs:
    """The writer claims a new run directory (or reopens the resumed one, whose checkpoint holds
    `completed` experiences and, as `prepare` checked it, `checkpoint_id`), locks it for this process, and
    tells the other processes where it is through the environment they inherit; the others read it
    from there."""
    if not writer:
        return NullOutputs(Path(os.environ.get(RUN_DIR_ENV, "")))
    claimed = None
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        lock = lock_run_dir(run_dir, "--resume")
        if checkpoint_identity(run_dir) != checkpoint_id:  # written by another process since `prepare` read it
            lock.release()
            raise ConfigError(f"--resume: {run_dir / CHECKPOINT} changed while this run was being prepared (another "
                              f"process wrote it); nothing was written; resume again to continue from it")
    else:
        claimed = claim_run_dir(cfg.output.root, cfg.name, cfg.output.version)
        run_dir = claimed.path
        try:
            lock = lock_run_dir(run_dir, "output.root")
        except BaseException:
            claimed.remove()
            raise
        try:
            atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
            # the label -> name mapping, and how new files become samples as this run's did (`predict` reads both)
            write_csv(run_dir / "classes.csv", ["label", "class"], list(enumerate(stream.names_of_classes())))
            write_json(run_dir / PREPARATION, {"modalities": {m: spec.to_dict() for m, spec in stream.modalities.items()},
                                               "preparation": stream.preparation})
        except BaseException:
            lock.release()
            claimed.remove()
            raise
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        return RunOutputs(run_dir, stream, lock, claimed, completed)
    except BaseException:
        lock.release()
        if claimed is not None:
            claimed.remove()
        raise


def class_accuracy_rows(per_class: list[dict[str, Any]], class_names: list[str]) -> list[list[Any]]:
    """Rows of class_accuracy.csv: label, name, test samples, then the class's accuracy after each experience
    (empty where it has no test samples), for the classes with test samples."""
    if not per_class or not per_class[-1]:
        return []
    support = per_class[-1]["support"]
    return [[c, class_names[c], support[c], *["" if not r or r["accuracy"][c] is None else r["accuracy"][c] for r in per_class]]
            for c in range(len(support)) if support[c]]


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
