"""When to add experts: a pure decision from what the new experience brings and how novel it looks.

Policies are registered in `GROWTH` by name (`model.params.growth`). A policy is a function of the
`GrowthSignals` that says whether it wants a new group of experts and why; the expert cap and the choice
of group to reuse are applied the same way for every policy, by `decide_growth`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lifelong_moe.registry import Registry


@dataclass(frozen=True)
class GrowthSignals:
    """What is known about a new experience before it trains. `closest_group` and `novelty_z` come from
    the task keys and are None before any keys exist, or when the policy does not ask for them.
    `known_accuracy` (the current model's accuracy on the experience's samples of classes it already
    knows) and `route_share` (share of its samples the current model routes to each group) are measured
    for policies registered with `needs_evidence=True`; None / empty otherwise."""

    n_groups: int
    new_modality: bool
    closest_group: int | None
    novelty_z: float | None
    novelty_threshold: float
    known_accuracy: float | None = None
    route_share: dict[int, float] = field(default_factory=dict)
    reuse_accuracy: float = 0.9


@dataclass
class GrowthDecision:
    grow: bool  # add a new group of experts
    reuse_group: int | None  # otherwise, the existing group this experience joins
    reason: str
    init_from: int | None = None  # a new group starts as a copy of this group's experts (warm start)


GrowthPolicy = Callable[[GrowthSignals], "tuple[bool, str] | GrowthDecision"]
GROWTH: Registry[GrowthPolicy] = Registry("growth policy")
"""`policy(signals) -> (wants a new group, reason)`, or a full `GrowthDecision` (which group to reuse, or
which to warm-start from). Register with `needs_novelty=True` if the policy reads `closest_group` /
`novelty_z`, with `needs_evidence=True` if it reads `known_accuracy` / `route_share`."""


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


@GROWTH.register("evidence", needs_evidence=True)
def _from_evidence(s: GrowthSignals) -> GrowthDecision:
    """Reuse the group the new data routes to when the model already classifies it well; otherwise grow,
    warm-started from that group when the experience's classes are known (they recur), fresh when not."""
    if s.known_accuracy is None or not s.route_share:
        return GrowthDecision(True, None, "no known class: grow fresh")
    closest = max(s.route_share, key=lambda g: s.route_share[g])
    evidence = f"known accuracy {s.known_accuracy:.3f} (reuse at >= {s.reuse_accuracy}), {s.route_share[closest]:.0%} routed to group {closest}"
    if s.new_modality:
        return GrowthDecision(True, None, f"{evidence}; new modality: grow, warm-started from group {closest}", init_from=closest)
    if s.known_accuracy >= s.reuse_accuracy:
        return GrowthDecision(False, closest, f"{evidence}: reuse group {closest}")
    return GrowthDecision(True, None, f"{evidence}: grow, warm-started from group {closest}", init_from=closest)


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
    known_accuracy: float | None = None,
    route_share: dict[int, float] | None = None,
    reuse_accuracy: float = 0.9,
) -> GrowthDecision:
    """Apply the named policy. The first experience always grows; beyond `max_experts` (0: no cap) the
    closest group is reused instead of growing."""
    policy_fn = GROWTH.get(policy, "model.params.growth")
    if n_groups == 0:
        return GrowthDecision(True, None, "first experience")
    signals = GrowthSignals(n_groups, new_modality, closest_group, novelty_z, novelty_threshold, known_accuracy,
                            dict(route_share or {}), reuse_accuracy)
    answer = policy_fn(signals)
    decision = answer if isinstance(answer, GrowthDecision) else GrowthDecision(answer[0], None, answer[1])
    fallback = decision.reuse_group if decision.reuse_group is not None else closest_group if closest_group is not None else n_groups - 1
    if decision.grow and max_experts and n_experts + experts_per_growth > max_experts:
        return GrowthDecision(False, fallback, f"{decision.reason}; cap of {max_experts} experts reached, reusing group {fallback}")
    if decision.grow:
        return decision
    reason = decision.reason if decision.reuse_group is not None else f"{decision.reason}; reusing group {fallback}"
    return GrowthDecision(False, fallback, reason)
