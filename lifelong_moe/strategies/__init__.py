"""Strategies: how the model is fitted at each experience of the runner's loop.

Native strategies (`native.py`) choose the data and fit with Lightning; Avalanche baselines
(`avalanche_baselines.py`) fit the same model with Avalanche's training templates and plugins.
Either way the runner evaluates the result with the same evaluator, so R and its metrics are comparable."""

from lifelong_moe.strategies import avalanche_baselines, native
from lifelong_moe.strategies.base import FitContext, Strategy
from lifelong_moe.strategies.native import LightningStrategy

__all__ = ["FitContext", "LightningStrategy", "Strategy", "avalanche_baselines", "native"]
