"""`model.name: stats`: the class-statistics classifier as a model of its own, and its settings, which the
MoE model reuses for its experience gate.

Each modality gets a fixed, seeded, never-trained feature map (random ReLU features of the raw input;
random convolution kernels, ROCKET-style, for signals; a hashed bag of words for tokens; a frozen
pretrained encoder's features when one is configured); streaming class statistics in it give an LDA per
modality; the modalities combine as a product of experts with a validated floor. Nothing is trained by
gradient and no sample is kept: this is SLDA (Hayes & Kanan 2020) on RanPAC-style random features
(McDonnell et al. 2023), with FeCAM's (Goswami et al. 2023) point that class statistics on fixed features
avoid forgetting by construction. It works when the fixed features separate the classes linearly."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import torch

from lifelong_moe.config.schema import TrainConfig
from lifelong_moe.errors import ConfigError
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.models.encoders import fixed_features
from lifelong_moe.registry import MODELS
from lifelong_moe.statistics import CONDITIONALS, StatisticsClassifier
from scenarios import Experience
from scenarios.modality import ModalitySpec


@dataclass
class StatsParams:
    width: int = 2048  # most fixed features per modality; 4 per first-experience training sample below that
    seed: int = 1234  # the fixed feature maps' seed (independent of the run's)
    shrinkages: list[float] = field(default_factory=lambda: [0.1, 0.01, 0.03, 0.3, 0.6, 0.9])  # candidates,
    # chosen on validation (the first wins without validation data)
    floors: list[float] = field(default_factory=lambda: [0.0, 0.03, 0.1, 0.3])  # uniform share per modality; ties to the smallest
    conditional: str = "current"  # p(c | x, e) from today's discriminants (current) or those e ended with (frozen)
    rank_share: float = 0.375  # the kept covariance of a wide space (1024+ features): its top (rank_share x width)
    # eigenpairs plus the diagonal of the rest (share < 0.5); 0 or narrower: its float32 triangle (statistics/compact_scatter.py)


def check_stats_params(p: StatsParams, key: str) -> None:
    def bad(name: str, msg: str) -> None:
        raise ConfigError(f"{key}.{name}: {msg}")

    if p.width < 1:
        bad("width", f"must be at least 1, got {p.width}")
    if not 0.0 <= p.rank_share <= 1.0:
        bad("rank_share", f"give a share of the width in [0, 1] (0: the full covariance), got {p.rank_share}")
    if p.conditional not in CONDITIONALS:
        bad("conditional", f"use {' or '.join(CONDITIONALS)}, got '{p.conditional}'")
    for name in ("shrinkages", "floors"):
        values = getattr(p, name)
        if not values or any(not 0.0 <= v <= 1.0 for v in values):
            bad(name, f"give one or more candidates in [0, 1], got {list(values)}")


class ModalityStatistics:
    """A `StatisticsClassifier` with its feature maps made per modality kind, its width settled by the first
    experience (4 features per training sample, rounded up to a power of two, at least 256, at most
    `width`: beyond that the shared covariance is mostly shrinkage, and a wider space costs D^3 per refit
    and D^2 bytes for nothing)."""

    def __init__(self, params: StatsParams) -> None:
        self.params = params
        self.width: int | None = None
        self.classifier = StatisticsClassifier(shrinkages=params.shrinkages, floors=params.floors, conditional=params.conditional,
                                               rank_share=params.rank_share)

    def settle_width(self, n_train: int) -> None:
        if self.width is None:
            self.width = min(self.params.width, 1 << max(8, math.ceil(math.log2(max(4 * n_train, 1)))))

    def add_modality(self, name: str, spec: ModalitySpec) -> None:
        if self.width is None:
            raise RuntimeError("settle_width() must run before the first modality is added")
        # a seed per modality name, independent of the global RNG (growth must not depend on it)
        self.classifier.add_modality(name, fixed_features(spec, self.width, self.params.seed + zlib.crc32(name.encode())))


class StatsModel(ContinualModule):
    """Streaming LDA on fixed feature maps per modality; nothing to train, nothing stored but statistics."""

    conditional_parameters = False

    def __init__(self, params: StatsParams, *, n_classes: int, scenario: str, train: TrainConfig) -> None:
        check_stats_params(params, "model.params")
        super().__init__(n_classes=n_classes, scenario=scenario, train=train, embed_dim=1)
        self._statistics = ModalityStatistics(params)
        self.statistics = self._statistics.classifier
        self.choices: dict[int, dict[str, float]] = {}

    def add_modality(self, name: str, spec: ModalitySpec) -> None:
        self.modality_specs[name] = spec  # no encoder: the feature map is fixed
        self._statistics.add_modality(name, spec)

    def on_experience_start(self, exp: Experience) -> None:
        self._statistics.settle_width(exp.spec.n_train)
        super().on_experience_start(exp)
        self.statistics.add_rows(exp.index, exp.classes)

    def on_experience_end(self, exp: Experience) -> None:
        if not self.rehearsing:
            validation = list(self.batches(exp.validation)) if exp.validation is not None else None
            self.choices[exp.index] = self.statistics.learn(exp.index, self.batches(exp.dataset), validation)

    def logits(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.statistics.featurize(inputs, self.presence(inputs))
        if self.statistics.n_rows == 0:  # the untrained model
            return next(iter(feats.values()))[0].new_zeros(len(next(iter(feats.values()))[0]), self.n_classes)
        return self.statistics.class_log_posterior(feats, self.n_classes)

    def stored_bytes(self) -> int:
        return self.statistics.nbytes

    def structure_state(self) -> dict[str, Any]:
        return {**super().structure_state(), "statistics_width": self._statistics.width, "statistics_choices": dict(self.choices)}

    def restore_structure(self, state: dict[str, Any]) -> None:
        self._statistics.width = state["statistics_width"]
        super().restore_structure(state)
        self.choices = {int(k): v for k, v in state.get("statistics_choices", {}).items()}

    def evaluation_probes(self) -> list[Any]:
        from lifelong_moe.models.moe_probes import StatisticsProbe

        return [StatisticsProbe()]


@MODELS.register("stats", params=StatsParams)
def stats(params: StatsParams, **kwargs: Any) -> StatsModel:
    """Class statistics on fixed feature maps (streaming LDA, SLDA/RanPAC): exemplar-free, nothing trained."""
    return StatsModel(params, **kwargs)
