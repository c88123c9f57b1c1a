"""The evaluator: after every experience, the accuracy on each test experience (a row of R), the
model's probes, and the imbalance record; before the stream, the untrained accuracies b; after it, the
missing-modality robustness. Accuracy is torchmetrics' MulticlassAccuracy, synchronised across processes."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from lifelong_moe.checkpointing import rng_state, set_rng_state
from lifelong_moe.config import ExperimentConfig
from lifelong_moe.evaluation.measure import measure
from lifelong_moe.evaluation.modality import (
    missing_rate_accuracy,
    single_modality_accuracy,
    subset_accuracy,
    token_share,
)
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.training import eval_loader
from scenarios import Stream


@dataclass
class Evaluation:
    """One evaluation after an experience: R's row, the probes' report, the imbalance record, and the row of
    each part of the model alone (`parts`: e.g. the MoE's statistics and experts)."""

    accuracies: list[float]
    report: dict[str, Any] = field(default_factory=dict)
    modality: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, list[float]] = field(default_factory=dict)
    per_class: dict[str, Any] = field(default_factory=dict)  # accuracy per class and the confusion matrix


class Evaluator:
    """Evaluates a model on every test experience of `stream`, with the same loaders at every step."""

    def __init__(self, stream: Stream, cfg: ExperimentConfig) -> None:
        self.stream, self.cfg = stream, cfg
        self.loaders = [eval_loader(e.dataset, cfg.train) for e in stream.test_stream]
        self.modalities = sorted(stream.modalities)

    def untrained(self, model: ContinualModule) -> list[float]:
        """b[j]: a copy of the untrained model, grown for every experience, evaluated on each (for FWT).
        The global RNG is forked so the real model's later growth is unaffected."""
        with torch.random.fork_rng(devices=[]):
            reference = copy.deepcopy(model)
            for exp in self.stream.train_stream:
                reference.on_experience_start(exp)
            return measure(reference, self.loaders, self.cfg.trainer)[0]

    def after_experience(self, model: ContinualModule, i: int) -> Evaluation:
        """R[i], the probes' report, each modality's share of experience i's training tokens and (if set)
        the accuracy of each modality alone."""
        accuracies, report, parts = measure(model, self.loaders, self.cfg.trainer, model.evaluation_probes(), per_class=True)
        per_class = report.pop("per_class")
        modality: dict[str, Any] = {"token_share": token_share(self.stream.train_stream[i].dataset, self.modalities)}
        if self.cfg.modality_eval.single_each_experience and len(self.modalities) > 1:
            state = rng_state()  # extra evaluations must not change what the run trains next
            modality["single_modality"] = single_modality_accuracy(model, self.stream.test_stream, self.modalities, self.cfg)
            set_rng_state(state)
        return Evaluation(accuracies, report, modality, parts, per_class)

    def robustness(self, model: ContinualModule) -> dict[str, Any]:
        """After the last experience: accuracy per subset of modalities and against the missing rate."""
        out: dict[str, Any] = {}
        if self.cfg.modality_eval.subsets and len(self.modalities) > 1:
            out["subsets"] = subset_accuracy(model, self.stream.test_stream, self.modalities, self.cfg)
        if self.cfg.modality_eval.missing_rates:
            out["missing_rate"] = missing_rate_accuracy(model, self.stream.test_stream, self.modalities, self.cfg)
        return out
