"""The probe contract: a model-specific measurement the evaluator runs beside accuracy.

A probe sees every evaluation batch with the model's `Prediction` and the index of the test experience
(loader) it came from, keeps its own sums on the model's device, and turns them into a report (plain
JSON-able data) at the end. Under DDP each process sees its share of the samples; `reduce` sums a tensor
over processes, so the report equals a single process's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor]


class Probe(Protocol):
    def start(self, model: Any, n_loaders: int) -> None:
        """Reset the sums for an evaluation over `n_loaders` test experiences (the model is on its device)."""

    def update(self, model: Any, prediction: Any, batch: Any, loader: int) -> None:
        """Add one batch of test experience `loader`."""

    def compute(self, model: Any, reduce: Reduce) -> dict[str, Any]:
        """The report: merged into the step's `evaluations` record in results.json."""
