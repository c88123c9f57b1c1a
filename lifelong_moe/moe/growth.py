"""When to add experts: a pure decision from what the new experience brings.

Policies are registered in `GROWTH` by name (`model.params.growth`). A policy is a function of the
`GrowthSignals` that says whether it wants a new group of experts and why; the first experience always
grows, and beyond the expert cap the group that most of the new experience's data is routed to is reused,
the same way for every policy (`decide_growth`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lifelong_moe.registry import Registry


@dataclass(frozen=True)
class GrowthSignals:
    """What is known about a new experience before it trains."""

    n_groups: int
    new_modality: bool


@dataclass
class GrowthDecision:
    grow: bool  # add a new group of experts
    reuse_group: int | None  # otherwise, the existing group this experience joins
    reason: str


GrowthPolicy = Callable[[GrowthSignals], "tuple[bool, str] | GrowthDecision"]
GROWTH: Registry[GrowthPolicy] = Registry("growth policy")
"""`policy(signals) -> (wants a new group, reason)`, or a `GrowthDecision` naming the group to reuse."""


@GROWTH.register("experience")
def _every_experience(s: GrowthSignals) -> tuple[bool, str]:
    """A new group of experts for every experience."""
    return True, "new experience"


@GROWTH.register("modality")
def _new_modality(s: GrowthSignals) -> tuple[bool, str]:
    """A new group only when the experience brings a modality the model has not seen."""
    return s.new_modality, "new modality" if s.new_modality else "no new modality"


def decide_growth(policy: str, *, n_groups: int, n_experts: int, experts_per_growth: int, max_experts: int,
                  new_modality: bool, closest_group: Callable[[], int]) -> GrowthDecision:
    """Apply the named policy. The first experience always grows; a policy that does not grow, or a growth
    beyond `max_experts` (0: no cap), reuses `closest_group()` (asked only then)."""
    policy_fn = GROWTH.get(policy, "model.params.growth")
    if n_groups == 0:
        return GrowthDecision(True, None, "first experience")
    answer = policy_fn(GrowthSignals(n_groups, new_modality))
    decision = answer if isinstance(answer, GrowthDecision) else GrowthDecision(answer[0], None, answer[1])
    if decision.grow and max_experts and n_experts + experts_per_growth > max_experts:
        group = closest_group()
        return GrowthDecision(False, group, f"{decision.reason}; cap of {max_experts} experts reached, reusing group {group}")
    if decision.grow or decision.reuse_group is not None:
        return decision
    group = closest_group()
    return GrowthDecision(False, group, f"{decision.reason}; reusing group {group}")
