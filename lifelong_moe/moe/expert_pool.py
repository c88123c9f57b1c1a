"""A growable pool of MLP experts, each its own module, tagged with the group (experience) that owns it.

One set of Parameters per expert keeps growth and freezing per expert, and gives each expert its own
weight gradient; stacked weights were measured slower on CPU (see experiments/bench_moe_layer.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lifelong_moe.moe.cached import StackCache


class MLPExpert(nn.Module):
    """Two-layer GELU MLP: (n, d) -> (n, d)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden_units(x))

    def hidden_units(self, x: torch.Tensor) -> torch.Tensor:
        """The activations between the two layers: (n, d) -> (n, hidden)."""
        return F.gelu(self.fc1(x))


class ExpertStacks:
    """The MLP experts' weights stacked, (e, h, d), (e, h), (e, d, h), (e, d), for the batched dispatch paths;
    kept while no expert changes (so frozen experts are not copied for every batch)."""

    def __init__(self) -> None:
        self._caches = [StackCache() for _ in range(4)]
        self._source: Sequence[nn.Module] | None = None  # a pool's ModuleList only grows by appending
        self._size = 0
        self._tensors: list[list[torch.Tensor]] = [[] for _ in range(4)]

    def __call__(self, experts: Sequence[nn.Module]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if experts is not self._source or len(experts) != self._size:
            self._source, self._size = experts, len(experts)
            self._tensors = [[getattr(getattr(e, layer), name) for e in experts]
                             for layer in ("fc1", "fc2") for name in ("weight", "bias")]
        w1, b1, w2, b2 = (cache(tensors) for cache, tensors in zip(self._caches, self._tensors, strict=True))
        return w1, b1, w2, b2


class ExpertPool(nn.Module):
    """Routed experts plus always-on shared experts. `owner[i]` is the group that created routed expert i."""

    def __init__(self, dim: int, hidden: int, n_shared: int = 0) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.experts = nn.ModuleList()
        self.shared = nn.ModuleList(MLPExpert(dim, hidden) for _ in range(n_shared))
        self.owner: list[int] = []
        self.stacks = ExpertStacks()

    def __len__(self) -> int:
        return len(self.experts)

    @property
    def params_per_expert(self) -> int:
        return 2 * self.dim * self.hidden + self.hidden + self.dim

    def add(self, n: int, group: int, device: torch.device | None = None) -> list[int]:
        """Append `n` experts owned by `group` on `device`; returns their indices."""
        start = len(self.experts)
        for _ in range(n):
            self.experts.append(MLPExpert(self.dim, self.hidden).to(device))
            self.owner.append(group)
        return list(range(start, start + n))

    def experts_of(self, group: int) -> list[nn.Module]:
        return [e for e, g in zip(self.experts, self.owner) if g == group]

    def shared_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the shared experts' outputs: (n, d)."""
        out = torch.zeros_like(x)
        for expert in self.shared:
            out = out + expert(x)
        return out
