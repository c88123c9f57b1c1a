"""Native strategies: which data the model trains on at each experience, fitted with Lightning.

A native strategy is a subclass of `LightningStrategy` registered in `STRATEGIES`. It chooses the data
(`train_data`) and may add Lightning callbacks (`callbacks`) and terms to the model's loss (`loss_terms`,
each `term(model, inputs, labels, logits) -> scalar`), e.g. a regulariser, without touching the model.
Register with `current_experience_only=True` if it trains on the current experience's data alone; models
that route each training batch to the current experience's experts (the MoE) accept only those."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from lifelong_moe.config.schema import TrainerConfig
from lifelong_moe.models.continual_module import ContinualModule, LossTerm
from lifelong_moe.registry import STRATEGIES
from lifelong_moe.strategies.base import FitContext
from lifelong_moe.training import fit_experience
from scenarios import Experience


class LightningStrategy:
    memory = "none"

    def __init__(self, params: Any = None) -> None:
        self.params = params

    def train_data(self, experiences: list[Experience], index: int) -> Any:
        return experiences[index].dataset

    def callbacks(self, model: ContinualModule, experiences: list[Experience], index: int) -> list[Callback]:
        return []

    def loss_terms(self, model: ContinualModule, experiences: list[Experience], index: int) -> list[LossTerm]:
        return []

    def fit(self, model: ContinualModule, experiences: list[Experience], index: int, ctx: FitContext) -> None:
        fit_experience(model, self.train_data(experiences, index), ctx.train, ctx.trainer, seed=ctx.seed, logger=ctx.logger,
                       callbacks=self.callbacks(model, experiences, index), loss_terms=self.loss_terms(model, experiences, index))

    def check(self, trainer: TrainerConfig, resume: bool) -> None:
        pass

    def stored_samples(self, experiences: list[Experience], index: int) -> int:
        return 0


@STRATEGIES.register("naive", current_experience_only=True)
class Naive(LightningStrategy):
    """Fine-tune on each experience's data alone (what the model itself does against forgetting decides)."""


@STRATEGIES.register("cumulative")
class Cumulative(LightningStrategy):
    """Train on every experience seen so far: the joint upper bound and the reference for intransigence."""

    memory = "all past samples"

    def stored_samples(self, experiences: list[Experience], index: int) -> int:
        return sum(e.spec.n_train for e in experiences[: index + 1])

    def train_data(self, experiences: list[Experience], index: int) -> Any:
        data = experiences[0].dataset
        for j in range(1, index + 1):
            data = data.concat(experiences[j].dataset)
        return data
