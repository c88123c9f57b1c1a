"""When to add experts: a pure decision from what the new experience brings and how novel it looks.

Policies are registered in `GROWTH` by name (`model.params.growth`). A policy is a function of the
`GrowthSignals` that says whether it wants a new group of experts and why; the expert cap and the choice
of group to reuse are applied the same way for every policy, by `decide_growth`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lifelong_moe.registry import Registry


@dataclass(frozen=True)
class GrowthSignals:
    """What is known about a new experience before it trains. `closest_group` and `novelty_z` come from
    the task keys and are None before any keys exist, or when the policy does not ask for them."""

    n_groups: int
    new_modality: bool
    closest_group: int | None
    novelty_z: float | None
    novelty_threshold: float


@dataclass
class GrowthDecision:
    grow: bool  # add a new group of experts
    reuse_group: int | None  # otherwise, the existing group this experience joins
    reason: str


GrowthPolicy = Callable[[GrowthSignals], tuple[bool, str]]
GROWTH: Registry[GrowthPolicy] = Registry("growth policy")
"""`policy(signals) -> (wants a new group, reason)`. Register with `needs_novelty=True` if the policy reads
`closest_group`/`novelty_z` (the model then scores the new data under the existing keys)."""


@GROWTH.register("experience")
def _every_experience(s: GrowthSignals) -> tuple[bool, str]:
    """A new group of experts for every experience."""
    return True, "new experience"


@GROWTH.register("modality")
def _new_modality(s: GrowthSignals) -> tuple[bool, str]:
    """A new group only when the experience brings a modality the model has not seen."""
    return s.new_modality, "new modality" if s.new_modality else "no new modality"


@GROWTH.register("novelty", needs_novelty=True)
def _novel_data(s: GrowthSignals) -> tuple[bool, str]:
    """A new group when the data lies more than `novelty_threshold` stds below what the closest keys expect."""
    novel = s.new_modality or s.novelty_z is None or s.novelty_z > s.novelty_threshold
    z_text = "n/a" if s.novelty_z is None else f"{s.novelty_z:.2f}"
    return novel, f"novelty z={z_text} vs threshold {s.novelty_threshold}" + (" (new modality)" if s.new_modality else "")


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
    """Apply the named policy. The first experience always grows; beyond `max_experts` (0: no cap) the
    closest group is reused instead of growing."""
    wants_fn = GROWTH.get(policy, "model.params.growth")
    if n_groups == 0:
        return GrowthDecision(True, None, "first experience")
    fallback = closest_group if closest_group is not None else n_groups - 1
    wants, reason = wants_fn(GrowthSignals(n_groups, new_modality, closest_group, novelty_z, novelty_threshold))
    if wants and max_experts and n_experts + experts_per_growth > max_experts:
        return GrowthDecision(False, fallback, f"{reason}; cap of {max_experts} experts reached, reusing group {fallback}")
    return GrowthDecision(True, None, reason) if wants else GrowthDecision(False, fallback, f"{reason}; reusing group {fallback}")
