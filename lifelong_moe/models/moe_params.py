"""Settings of the lifelong MoE model (`model.params` under `model.name: moe`) and their checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from lifelong_moe.errors import ConfigError
from lifelong_moe.models.freezing import ENCODER_TRAINING
from lifelong_moe.models.self_labels import SELF_LABELS
from lifelong_moe.models.stats_model import StatsParams, check_stats_params
from lifelong_moe.moe import COMMUNICATION, GROWTH


@dataclass
class SharedExpertsParams:
    """`communication: shared`: always-on experts per layer that keep training in every experience."""

    n: int = 1  # shared experts per layer
    anchor: float = 1.0  # weight of the L2 pull to their values at the end of the previous experience
    drift_bound: float | None = None  # most relative distance from their first-experience values (0: frozen after it)


@dataclass
class MoEParams:
    embed_dim: int = 64  # width of the modality tokens and the experts' input and output
    n_layers: int = 2  # MoE layers
    expert_hidden: int = 128  # hidden width of each expert's MLP
    experts_per_growth: int = 2  # experts added to every layer at each growth step
    k: int = 2  # experts per token, within the routed group (at most experts_per_growth)
    balance_loss_weight: float = 0.01  # Switch/GShard load balance over the routed group's experts
    z_loss_weight: float = 0.001  # ST-MoE router z-loss
    growth: str = "experience"  # experience | modality (moe/growth.py)
    max_experts: int = 0  # per layer; 0: no cap. Beyond it the group most of the new data routes to is reused
    freeze_old: bool = True  # everything trained in earlier experiences stops training (freezing.py)
    encoder_training: str = "introduced"  # introduced | never | always | per_group (freezing.py)
    communication: str = "none"  # none | lateral | attention | pnn | shared (moe/communication.py)
    shared: SharedExpertsParams = field(default_factory=SharedExpertsParams)  # communication: shared only
    expert_weights: list[float] = field(default_factory=lambda: [0.5, 0.0, 0.25, 0.75, 1.0])  # candidates for w,
    # chosen on validation (the first wins without validation data)
    statistics: StatsParams = field(default_factory=StatsParams)  # the gate and p_stat (models/stats_model.py)
    gate: str = "fixed"  # fixed: statistics in fixed feature maps; nested: also in each group's own learned
    # features (statistics/nested.py; every group then runs on every sample at test time)
    self_labels: str = "none"  # none | rotations | flips | dihedral: each experience also learns (class, transform) pairs
    # of its batch under random transforms, PASS's label augmentation (models/self_labels.py; 2x training compute)


def check_moe_params(p: MoEParams) -> None:
    """Refuse a bad `model.params` in one line naming the key."""
    def bad(key: str, msg: str) -> None:
        raise ConfigError(f"model.params.{key}: {msg}")

    for key in ("embed_dim", "n_layers", "expert_hidden", "experts_per_growth", "k"):
        if getattr(p, key) < 1:
            bad(key, f"must be at least 1, got {getattr(p, key)}")
    if p.k > p.experts_per_growth:
        bad("k", f"must not exceed experts_per_growth ({p.experts_per_growth}): a sample is routed within one group")
    if p.growth not in GROWTH:
        bad("growth", f"unknown policy '{p.growth}'; use one of {', '.join(GROWTH)}")
    if p.max_experts and p.max_experts < p.experts_per_growth:
        bad("max_experts", f"must be 0 (no cap) or at least experts_per_growth ({p.experts_per_growth})")
    if p.encoder_training not in ENCODER_TRAINING:
        bad("encoder_training", f"use {', '.join(ENCODER_TRAINING)}, got '{p.encoder_training}'")
    if p.gate not in ("fixed", "nested"):
        bad("gate", f"use fixed or nested, got '{p.gate}'")
    if p.self_labels != "none" and p.self_labels not in SELF_LABELS:
        bad("self_labels", f"use none, {', '.join(SELF_LABELS)}, got '{p.self_labels}'")
    if p.communication not in COMMUNICATION:
        bad("communication", f"unknown mode '{p.communication}'; use one of {', '.join(COMMUNICATION)}")
    if COMMUNICATION.get(p.communication).anchors_shared_experts and p.shared.n < 1:
        bad("shared.n", f"communication={p.communication} needs at least 1 shared expert")
    if p.shared.drift_bound is not None and p.shared.drift_bound < 0:
        bad("shared.drift_bound", f"must be >= 0 or null, got {p.shared.drift_bound}")
    if not p.expert_weights or any(not 0.0 <= v <= 1.0 for v in p.expert_weights):
        bad("expert_weights", f"give one or more candidates in [0, 1], got {list(p.expert_weights)}")
    check_stats_params(p.statistics, "model.params.statistics")
