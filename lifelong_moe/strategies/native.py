"""Native strategies: what the model trains on at each experience of the runner's loop."""

from __future__ import annotations

from typing import Any, Protocol

from lifelong_moe.registry import STRATEGIES


class Strategy(Protocol):
    def train_data(self, train_stream: Any, index: int) -> Any:
        """The dataset trained on at experience `index`."""


@STRATEGIES.register("naive")
class Naive:
    """Fine-tune on each experience's data alone (what the model itself does against forgetting decides)."""

    def __init__(self, params: None = None) -> None:
        pass

    def train_data(self, train_stream: Any, index: int) -> Any:
        return train_stream[index].dataset


@STRATEGIES.register("cumulative")
class Cumulative:
    """Train on every experience seen so far: the joint upper bound and the reference for intransigence."""

    def __init__(self, params: None = None) -> None:
        pass

    def train_data(self, train_stream: Any, index: int) -> Any:
        data = train_stream[0].dataset
        for j in range(1, index + 1):
            data = data.concat(train_stream[j].dataset)
        return data
