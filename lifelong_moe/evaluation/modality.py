"""Robustness to missing modalities and modality imbalance: accuracy with each subset of modalities,
accuracy when each modality goes missing at a given rate, and each modality's share of the training data.
All accuracies come from the evaluator that fills R, over every test experience, weighted by size."""

from __future__ import annotations

from typing import Any

from lifelong_moe.config import ExperimentConfig
from lifelong_moe.evaluation.measure import measure
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.training import eval_loader
from scenarios.masking import MaskedView, keep_subset, modality_subsets, present_matrix, with_missing_rate


def _accuracy(model: ContinualModule, views: list[MaskedView], cfg: ExperimentConfig) -> dict[str, Any]:
    """Overall accuracy over the non-empty views (size-weighted), and each view's own (None if empty)."""
    live = [k for k, v in enumerate(views) if len(v)]
    per: list[float | None] = [None] * len(views)
    if live:
        loaders = [eval_loader(views[k], cfg.train) for k in live]
        for k, acc in zip(live, measure(model, loaders, cfg.trainer)[0], strict=True):
            per[k] = acc
    n = sum(len(views[k]) for k in live)
    overall = sum(per[k] * len(views[k]) for k in live) / n if n else None
    return {"accuracy": overall, "n": n, "per_experience": per}


def _kept(model: ContinualModule, test_stream: Any, modalities: list[str], subsets: list[tuple[str, ...]],
          cfg: ExperimentConfig) -> dict[str, Any]:
    """Accuracy with only each given subset of modalities, on the samples that carry the whole subset."""
    return {"+".join(s): _accuracy(model, [keep_subset(e.dataset, modalities, s) for e in test_stream], cfg) for s in subsets}


def single_modality_accuracy(model: ContinualModule, test_stream: Any, modalities: list[str],
                             cfg: ExperimentConfig) -> dict[str, Any]:
    """Accuracy of each modality alone, on the test samples that carry it."""
    return _kept(model, test_stream, modalities, [(m,) for m in modalities], cfg)


def subset_accuracy(model: ContinualModule, test_stream: Any, modalities: list[str], cfg: ExperimentConfig) -> dict[str, Any]:
    """Accuracy with only each non-empty subset of modalities, on the samples that carry the whole subset."""
    return _kept(model, test_stream, modalities, modality_subsets(modalities), cfg)


def missing_rate_accuracy(model: ContinualModule, test_stream: Any, modalities: list[str], cfg: ExperimentConfig) -> dict[str, Any]:
    """Accuracy when each modality of each test sample is missing with probability r (fixed draws per r)."""
    out = {}
    for r in cfg.modality_eval.missing_rates:
        views = [with_missing_rate(e.dataset, modalities, r, seed=cfg.seed * 1009 + j * 101 + round(r * 100))
                 for j, e in enumerate(test_stream)]
        out[f"{r:g}"] = _accuracy(model, views, cfg)
    return out


def token_share(dataset: Any, modalities: list[str]) -> dict[str, float]:
    """Share of the present (sample, modality) tokens that each modality contributes to a training set."""
    present = present_matrix(dataset, modalities)
    total = max(int(present.sum()), 1)
    return {m: float(present[:, k].sum() / total) for k, m in enumerate(modalities)}
