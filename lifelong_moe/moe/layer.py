"""One MoE block: pre-norm, top-k routing over a growable expert pool, sparse dispatch, shared experts,
residual. Returns an explicit result carrying the auxiliary losses and the routing decision."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lifelong_moe.moe.dispatch import sparse_dispatch
from lifelong_moe.moe.expert_pool import ExpertPool
from lifelong_moe.moe.losses import load_balancing_loss, router_z_loss
from lifelong_moe.moe.router import Routing, TopKRouter


@dataclass
class MoEOutput:
    hidden: torch.Tensor  # (n, d)
    balance_loss: torch.Tensor  # scalar
    z_loss: torch.Tensor  # scalar
    routing: Routing
    counts: torch.Tensor  # (e,) tokens per routed expert


class MoELayer(nn.Module):
    def __init__(self, dim: int, hidden: int, k: int, noise_std: float = 0.0, n_shared: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.router = TopKRouter(dim, k, noise_std)
        self.pool = ExpertPool(dim, hidden, n_shared)

    @property
    def n_experts(self) -> int:
        return len(self.pool)

    def grow(self, n: int, group: int) -> list[int]:
        """Add `n` routed experts owned by `group`, with their router columns, on the layer's device."""
        device = self.norm.weight.device
        self.router.add_columns(n, device)
        return self.pool.add(n, group, device)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> MoEOutput:
        """x: (n, d); bias, allowed: (n, e) router log-prior and mask."""
        h = self.norm(x)
        routing = self.router(h, bias=bias, allowed=allowed)
        routed, counts = sparse_dispatch(h, routing.topk_idx, routing.topk_weight, self.pool.experts)
        out = x + routed + self.pool.shared_forward(h)
        return MoEOutput(
            out,
            load_balancing_loss(routing.probs, routing.topk_idx, self.n_experts if allowed is None else allowed.any(0).sum()),
            router_z_loss(routing.logits.masked_fill(routing.logits <= torch.finfo(routing.logits.dtype).min, -1e4)),
            routing,
            counts,
        )
