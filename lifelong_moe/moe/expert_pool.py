"""A growable pool of MLP experts, each its own module, tagged with the group (experience) that owns it.

One set of Parameters per expert keeps growth and freezing per expert, and gives each expert its own
weight gradient; stacked weights were measured slower on CPU (see experiments/bench_moe_layer.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


class ExpertPool(nn.Module):
    """Routed experts plus always-on shared experts. `owner[i]` is the group that created routed expert i."""

    def __init__(self, dim: int, hidden: int, n_shared: int = 0) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.experts = nn.ModuleList()
        self.shared = nn.ModuleList(MLPExpert(dim, hidden) for _ in range(n_shared))
        self.owner: list[int] = []

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
