"""Experience gates: log p(e | x), which experience a sample most likely comes from, over the experiences
that have experts. The MoE model routes each sample to the experts of its most likely experience and
weighs every experience's prediction by p(e | x); which gate it uses is its only source of task identity.

- `StatisticsGate`: from class statistics in fixed feature spaces (task-free; the default), and with `gate:
  nested` also in the groups' own learned features (`statistics/nested.py`).
- `TaskLabelGate`: from the task label (task-incremental streams, where labels are given at test time).

A gate is any object with `log_posterior(feats, task_labels, experiences) -> (B, n)`; `feats` are the
statistics' features of the batch (computed once per forward, also used for p(c | x, e))."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from lifelong_moe.moe.segments import NEG
from lifelong_moe.statistics import Features, StatisticsClassifier


class ExperienceGate(Protocol):
    def log_posterior(self, feats: Features, task_labels: torch.Tensor | None, experiences: Sequence[int]) -> torch.Tensor:
        """(B, len(experiences)) log p(e | x)."""


class StatisticsGate:
    """p(e | x) = sum over e's (experience, class) rows of p(row | x), from the statistics classifier; with
    `learned` (B, R), the log p(row | x) of the statistics in the groups' own features (`NestedStatistics`),
    as a second expert of the product."""

    def __init__(self, statistics: StatisticsClassifier, learned: torch.Tensor | None = None) -> None:
        self.statistics, self.learned = statistics, learned

    def log_posterior(self, feats: Features, task_labels: torch.Tensor | None, experiences: Sequence[int],
                      rows: torch.Tensor | None = None) -> torch.Tensor:
        """`rows`: log p(row | x) (with `learned`) when the caller already has it (it also needs it for p(c | x, e))."""
        return self.statistics.experience_log_posterior(feats, experiences, self.learned, rows=rows)


class TaskLabelGate:
    """p(e | x) uniform over the experiences whose task label is the sample's (`experience_task`)."""

    def __init__(self, experience_task: dict[int, int]) -> None:
        self.experience_task = experience_task

    def log_posterior(self, feats: Features, task_labels: torch.Tensor | None, experiences: Sequence[int]) -> torch.Tensor:
        if task_labels is None:
            raise ValueError("the task-label gate needs task labels")
        match = torch.stack([task_labels == self.experience_task[e] for e in experiences], 1)  # (B, n)
        return torch.where(match, 0.0, NEG) - match.sum(1, keepdim=True).clamp_min(1).log()
