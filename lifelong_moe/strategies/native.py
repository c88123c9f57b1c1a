"""Native strategies: which data the model trains on at each experience, fitted with Lightning."""

from __future__ import annotations

from typing import Any

from lifelong_moe.config.schema import TrainerConfig
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.registry import STRATEGIES
from lifelong_moe.strategies.base import FitContext
from lifelong_moe.training import fit_experience


class _LightningFit:
    memory = "none"

    def train_data(self, train_stream: Any, index: int) -> Any:
        raise NotImplementedError

    def fit(self, model: ContinualModule, train_stream: Any, index: int, ctx: FitContext) -> None:
        fit_experience(model, self.train_data(train_stream, index), ctx.train, ctx.trainer, seed=ctx.seed, logger=ctx.logger)

    def check(self, trainer: TrainerConfig, resume: bool) -> None:
        pass


@STRATEGIES.register("naive")
class Naive(_LightningFit):
    """Fine-tune on each experience's data alone (what the model itself does against forgetting decides)."""

    def __init__(self, params: None = None) -> None:
        pass

    def train_data(self, train_stream: Any, index: int) -> Any:
        return train_stream[index].dataset


@STRATEGIES.register("cumulative")
class Cumulative(_LightningFit):
    """Train on every experience seen so far: the joint upper bound and the reference for intransigence."""

    memory = "all past samples"

    def __init__(self, params: None = None) -> None:
        pass

    def train_data(self, train_stream: Any, index: int) -> Any:
        data = train_stream[0].dataset
        for j in range(1, index + 1):
            data = data.concat(train_stream[j].dataset)
        return data

