"""What the runner needs from a strategy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lifelong_moe.config.schema import TrainConfig, TrainerConfig
from lifelong_moe.models.continual_module import ContinualModule
from scenarios import Experience


@dataclass
class FitContext:
    train: TrainConfig
    trainer: TrainerConfig
    seed: int  # the data order of this experience
    logger: Any  # a Lightning logger, or False


class Strategy(Protocol):
    memory: str  # what it keeps of past experiences ("none", "200", "all past samples"), reported with the results

    def fit(self, model: ContinualModule, experiences: list[Experience], index: int, ctx: FitContext) -> None:
        """Train `model` (already adapted to experience `index` by the runner) on that experience."""

    def check(self, trainer: TrainerConfig, resume: bool) -> None:
        """Refuse settings this strategy cannot run under, with the config key at fault."""

    def stored_samples(self, experiences: list[Experience], index: int) -> int:
        """How many training samples of past experiences it keeps after training experience `index`."""
