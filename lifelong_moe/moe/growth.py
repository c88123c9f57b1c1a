"""When to add experts: a pure decision from what the new experience brings and how novel it looks."""

from __future__ import annotations

from dataclasses import dataclass

GROWTH_POLICIES = ("experience", "modality", "novelty")


@dataclass
class GrowthDecision:
    grow: bool  # add a new group of experts
    reuse_group: int | None  # otherwise, the existing group this experience joins
    reason: str


def decide_growth(
    policy: str,
    *,
    n_groups: int,
    n_experts: int,
    experts_per_growth: int,
    max_experts: int,
    new_modality: bool,
    closest_group: int | None,
    novelty_z: float | None,
    novelty_threshold: float,
) -> GrowthDecision:
    """`closest_group`/`novelty_z` come from the task keys (None before any keys exist).
    Beyond `max_experts` (0: no cap) the closest group is reused instead of growing."""
    if policy not in GROWTH_POLICIES:
        raise ValueError(f"unknown growth policy '{policy}'; use one of {GROWTH_POLICIES}")
    fallback = closest_group if closest_group is not None else n_groups - 1
    if n_groups == 0:
        return GrowthDecision(True, None, "first experience")
    if policy == "experience":
        wants, reason = True, "new experience"
    elif policy == "modality":
        wants, reason = new_modality, "new modality" if new_modality else "no new modality"
    else:
        novel = new_modality or novelty_z is None or novelty_z > novelty_threshold
        z_text = "n/a" if novelty_z is None else f"{novelty_z:.2f}"
        wants, reason = novel, f"novelty z={z_text} vs threshold {novelty_threshold}" + (" (new modality)" if new_modality else "")
    if wants and max_experts and n_experts + experts_per_growth > max_experts:
        return GrowthDecision(False, fallback, f"{reason}; cap of {max_experts} experts reached, reusing group {fallback}")
    return GrowthDecision(True, None, reason) if wants else GrowthDecision(False, fallback, f"{reason}; reusing group {fallback}")
