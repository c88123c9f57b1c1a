"""What a run has measured so far, as one object: created fresh or from a checkpoint, grown by one
record per experience, and written out as a checkpoint and as results.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lifelong_moe.checkpointing import rng_state, set_rng_state
from lifelong_moe.evaluation import Evaluation
from lifelong_moe.metrics import contributions, summarize
from lifelong_moe.models.continual_module import ContinualModule
from scenarios import Stream


@dataclass
class RunState:
    """R[i][j] and b[j], and per completed experience: timings, parameter counts, the probes' reports and
    the modality record; after the stream, the missing-modality robustness."""

    R: np.ndarray
    b: list[float] | None
    timing: list[dict[str, float]] = field(default_factory=list)
    params: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    modality: list[dict[str, Any]] = field(default_factory=list)
    per_class: list[dict[str, Any]] = field(default_factory=list)  # accuracy per class and confusion matrix
    robustness: dict[str, Any] | None = None  # set once the stream is done
    elapsed_s: float = 0.0  # wall time spent before this process took over (a resumed run)

    @property
    def completed(self) -> int:
        return len(self.timing)

    @classmethod
    def fresh(cls, n_experiences: int, b: list[float] | None) -> RunState:
        return cls(np.full((n_experiences, n_experiences), np.nan), b)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], model: ContinualModule) -> RunState:
        """Restore the model (structure first, then weights, then the freeze state), the RNG, and the state."""
        restore_model(model, checkpoint)
        set_rng_state(checkpoint["rng"])
        return cls(np.asarray(checkpoint["R"], dtype=float), checkpoint["b"], checkpoint["timing"], checkpoint["params"],
                   checkpoint["reports"], checkpoint.get("modality", []), checkpoint.get("per_class") or [{} for _ in checkpoint["timing"]],
                   elapsed_s=checkpoint["elapsed_s"])

    def record(self, evaluation: Evaluation, params: dict[str, Any], t_start: float, t_trained: float, t_end: float) -> None:
        """Add the evaluation after experience `self.completed`."""
        i = self.completed
        self.R[i] = evaluation.accuracies
        self.reports.append({**evaluation.report, "contributions": evaluation.parts} if evaluation.parts else evaluation.report)
        self.modality.append(evaluation.modality)
        self.per_class.append(evaluation.per_class)
        self.params.append(params)
        self.timing.append({"train_s": t_trained - t_start, "eval_s": t_end - t_trained, "total_s": t_end - t_start})

    def metrics(self, stream: Stream, reference_diagonal: list[float] | None = None) -> dict[str, Any]:
        """Every stream metric of R so far (the first `completed` rows and columns)."""
        n = self.completed
        sizes = [e.n_test for e in stream.experiences]
        return summarize(self.R[:n, :n], self.b[:n] if self.b else None, sizes[:n], reference_diagonal)

    def to_checkpoint(self, config: dict[str, Any], model: ContinualModule, elapsed_s: float,
                      data_files: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
        """The checkpoint's content; `data_files` fingerprints the files the stream was read from."""
        return {
            "config": config, "completed": self.completed, "structure": model.structure_state(),
            "model": model.state_dict(), "R": self.R.tolist(), "b": self.b, "timing": self.timing, "params": self.params,
            "reports": self.reports, "modality": self.modality, "per_class": self.per_class, "elapsed_s": elapsed_s, "rng": rng_state(),
            "data_files": data_files or {},
        }

    def to_results(self, header: dict[str, Any], stream: Stream, metrics: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
        """results.json: `header` (experiment, seed, status, model, strategy, memory) and everything measured."""
        results = {
            **header,
            "scenario": stream.scenario.value,
            "completed_experiences": self.completed,
            "class_names": stream.names_of_classes(),  # indexed by label
            "experiences": [
                {"name": e.name, "source": e.source, "classes": e.classes, "class_names": [stream.class_name(c) for c in e.classes],
                 "modalities": e.modalities, "task_label": e.task_label, "n_train": e.n_train, "n_test": e.n_test}
                for e in stream.experiences
            ],
            "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in row] for row in self.R],
            "untrained_accuracy": self.b,
            "metrics": metrics,
            "time_per_experience_s": self.timing,
            "parameters_per_experience": self.params,
            "evaluations": self.reports,  # per training step: the model's probes, e.g. routing statistics
            "modality_per_experience": self.modality,
            # per training step, over every test experience: accuracy per class (by label) and the confusion
            # matrix [true][predicted] (torchmetrics)
            "per_class": self.per_class,
            "wall_time_s": elapsed_s,
        }
        parts = self.part_rows()
        if parts:  # each part of the model alone beside the whole (e.g. the MoE's statistics and experts)
            n = self.completed
            results["contributions"] = contributions({k: [row[:n] for row in rows] for k, rows in parts.items()}, self.R[:n, :n])
        if self.robustness is not None:
            results["modality_evaluation"] = self.robustness
        return results

    def part_rows(self) -> dict[str, list[list[float]]]:
        """Per part the model reports: its accuracy on every test experience after each completed experience."""
        names = self.reports[0].get("contributions", {}) if self.reports else {}
        return {k: [r["contributions"][k] for r in self.reports] for k in names}

def restore_model(model: ContinualModule, checkpoint: dict[str, Any]) -> None:
    """A freshly built model grown to the checkpoint's structure, then given its weights and freeze state."""
    model.restore_structure(checkpoint["structure"])
    model.load_state_dict(checkpoint["model"])
    model.apply_trainable(checkpoint["structure"]["trainable"])
