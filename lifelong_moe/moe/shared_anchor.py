"""What keeps always-on shared experts near where they were trained (`shared` communication): they keep
training in every experience, pulled back by an L2 anchor to their values at the end of the previous
experience and, with a bound, projected after every optimizer step into a ball of relative radius `bound`
around their values at the end of the first experience that trained them (0: frozen after it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

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


class SharedAnchor(nn.Module):
    """The anchors (and, with a bound, origins) of every shared expert under `layers`, as buffers so that
    checkpoints carry them. `set()` at the end of each experience; `penalty()` in the loss; `project()` after
    each optimizer step."""

    def __init__(self, layers: nn.Module, bound: float | None) -> None:
        super().__init__()
        self.bound = bound
        self._params = [(name.replace(".", "__"), p) for name, p in layers.named_parameters() if ".shared." in name]
        experts: dict[str, list[tuple[nn.Parameter, str]]] = {}
        for name, p in self._params:
            self.register_buffer(f"anchor__{name}", p.detach().clone())
            if bound is not None:
                self.register_buffer(f"origin__{name}", p.detach().clone())
                experts.setdefault(name.rsplit("__", 2)[0], []).append((p, name))  # one expert: <layer>__pool__shared__<i>
        self._experts = list(experts.values())
        self.register_buffer("is_set", torch.tensor(False))

    @property
    def parameters_held(self) -> list[nn.Parameter]:
        return [p for _, p in self._params]

    @torch.no_grad()
    def set(self) -> None:
        """Anchor at the current values; the first time, also the origins of the bound."""
        if not bool(self.is_set):
            for expert in self._experts:
                for p, name in expert:
                    getattr(self, f"origin__{name}").copy_(p.detach())
        for name, p in self._params:
            getattr(self, f"anchor__{name}").copy_(p.detach())
        self.is_set.fill_(True)

    def penalty(self) -> torch.Tensor:
        """Squared distance of the shared experts from their anchors (zero before the first anchor)."""
        if not self._params or not bool(self.is_set):
            return self.is_set.new_zeros((), dtype=torch.float32)
        return sum((p - getattr(self, f"anchor__{name}")).pow(2).sum() for name, p in self._params)

    def _pairs(self) -> list[list[tuple[nn.Parameter, torch.Tensor]]]:
        return [[(p, getattr(self, f"origin__{name}")) for p, name in expert] for expert in self._experts]

    def project(self) -> None:
        if self.bound is not None and bool(self.is_set):
            project_into_bound(self._pairs(), self.bound)

    def drift(self) -> float | None:
        """Largest relative distance of a shared expert from its origin (bounded, once set)."""
        if self.bound is None or not bool(self.is_set):
            return None
        return max((relative_drift(expert) for expert in self._pairs()), default=0.0)
