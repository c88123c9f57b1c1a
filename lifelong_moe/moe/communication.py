"""Communication between experts inside one MoE layer, chosen by name (`communication:` in the MoE params).

- `none`: experts do not exchange anything (the combination is the gate-weighted sum).
- `lateral`: as in Progressive Neural Networks: a group's experts also read the outputs of every older
  (frozen) group's experts through a learned adapter with a learned gate, so old knowledge flows forward
  while the old experts stay unchanged.
- `attention`: the outputs of the k experts chosen for a token, plus a summary of the older groups'
  experts, attend to each other before they are combined.
- `shared`: nothing between routed experts; always-on shared experts keep training across experiences,
  anchored to their previous values (handled by the model, see `MoEClassifier`).

Every module here belongs to one group (the experience that grew it) and is frozen with that group, so
what an old experience computes never changes: its experts, and the modules that feed them, are fixed.
Adapters start at zero, so a new group begins exactly as with `none`.
Shape key: n tokens, d width, k slots, e experts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lifelong_moe.registry import Registry

COMMUNICATION: Registry[Callable[[int], nn.Module | None]] = Registry("communication")
"""`factory(dim) -> module or None`: the per-group module a mode adds at each growth step."""


class LateralAdapter(nn.Module):
    """tanh(gate) * W(mean of older experts' outputs): added to what the group's experts produce."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.gate = nn.Parameter(torch.tensor(0.5))

    def forward(self, slots: torch.Tensor, weights: torch.Tensor, older: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """slots (n, k, d), weights (n, k), older (n, d) or None -> combined (n, d)."""
        combined = (slots * weights.unsqueeze(-1)).sum(1)
        if older is None:
            return combined, {}
        return combined + torch.tanh(self.gate) * self.proj(older), {}


class SlotAttention(nn.Module):
    """One attention head over the k chosen experts' outputs and the older groups' summary; the attended
    values are added back through a zero-initialised projection, then combined by the gates."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.scale = dim ** -0.5

    def forward(self, slots: torch.Tensor, weights: torch.Tensor, older: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        ctx = slots if older is None else torch.cat([slots, older.unsqueeze(1)], 1)  # (n, k[+1], d)
        attn = torch.softmax(self.q(slots) @ self.k(ctx).transpose(1, 2) * self.scale, dim=-1)  # (n, k, k[+1])
        mixed = slots + self.out(attn @ self.v(ctx))
        return (mixed * weights.unsqueeze(-1)).sum(1), {"attention": attn}


COMMUNICATION.register("none")(lambda dim: None)
COMMUNICATION.register("shared")(lambda dim: None)  # the shared experts themselves carry it
COMMUNICATION.register("lateral")(LateralAdapter)
COMMUNICATION.register("attention")(SlotAttention)


def older_summary(h: torch.Tensor, experts: Sequence[nn.Module], owner: Sequence[int], group: int) -> torch.Tensor | None:
    """Mean output of the experts of groups older than `group` on tokens h (n, d), or None if there are none."""
    older = [e for e, g in zip(experts, owner, strict=True) if g < group]
    if not older:
        return None
    return torch.stack([e(h) for e in older]).mean(0)
