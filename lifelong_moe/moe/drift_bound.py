"""A hard bound on how far shared experts may drift from where they were first trained.

`shared` communication lets always-on experts keep training in every experience; the L2 anchor only pulls
them back. With a bound, each shared expert (all its parameters as one vector) stays within a relative
distance `bound` of its values at the end of the experience that first trained it, so what those
experiences compute can only change by as much as that distance allows (0: the experts are frozen)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Expert = Sequence[tuple[torch.Tensor, torch.Tensor]]  # (parameter, its origin) for each tensor of one expert


def relative_drift(expert: Expert) -> float:
    """||theta - origin|| / ||origin|| over all of one expert's tensors."""
    moved = sum(float((p.detach() - o).pow(2).sum()) for p, o in expert)
    size = sum(float(o.pow(2).sum()) for _, o in expert)
    return (moved / max(size, 1e-24)) ** 0.5


@torch.no_grad()
def project_into_bound(experts: Sequence[Expert], bound: float) -> float:
    """Move each expert back onto the ball of radius bound * ||origin|| around its origin if it left it;
    returns the largest relative drift after the projection."""
    largest = 0.0
    for expert in experts:
        drift = relative_drift(expert)
        if drift > bound:
            keep = bound / drift  # 0 when the bound is 0: back to the origin
            for p, o in expert:
                p.copy_(o + (p - o) * keep)
            drift = relative_drift(expert)
        largest = max(largest, drift)
    return largest
