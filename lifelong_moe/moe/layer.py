"""One MoE block: pre-norm, top-k routing over a growable expert pool, sparse dispatch, shared experts,
residual. Returns an explicit result carrying the auxiliary losses and the routing decision."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lifelong_moe.moe.communication import COMMUNICATION, Stats, add_stats
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
    stats: Stats = field(default_factory=dict)  # what communication did: sums over tokens, for reports


class MoELayer(nn.Module):
    def __init__(self, dim: int, hidden: int, k: int, noise_std: float = 0.0, n_shared: int = 0,
                 communication: str = "none") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.router = TopKRouter(dim, k, noise_std)
        self.pool = ExpertPool(dim, hidden, n_shared)
        self.communication = communication
        self._comm_mode = COMMUNICATION.get(communication, "model.params.communication")
        self.comm = nn.ModuleDict()  # group -> its communication module (none for `none` and `shared`)

    @property
    def n_experts(self) -> int:
        return len(self.pool)

    def grow(self, n: int, group: int, init_from: int | None = None) -> list[int]:
        """Add `n` routed experts owned by `group`, with their router columns, on the layer's device. With
        `init_from`, the new experts and columns start as copies of that group's (a warm start: its
        knowledge carries into the new group, while the old group itself stays as it was)."""
        device = self.norm.weight.device
        source = [i for i, g in enumerate(self.pool.owner) if g == init_from] if init_from is not None else []
        self.router.add_columns(n, device)
        module = self._comm_mode.module_for(self.pool, group)
        if module is not None and str(group) not in self.comm:
            self.comm[str(group)] = module.to(device)
        added = self.pool.add(n, group, device)
        with torch.no_grad():
            for k, new in enumerate(added if source else []):
                old = source[k % len(source)]
                for dst, src in zip(self.pool.experts[new].parameters(), self.pool.experts[old].parameters(), strict=True):
                    dst.copy_(src)
                self.router.columns[new].copy_(self.router.columns[old])
        return added

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> MoEOutput:
        """x: (n, d); bias, allowed: (n, e) router log-prior and mask."""
        h = self.norm(x)
        routing = self.router(h, bias=bias, allowed=allowed)
        stats: Stats = {}
        if len(self.comm):
            routed, counts, stats = self._communicate(h, routing)
        else:
            routed, counts = sparse_dispatch(h, routing.topk_idx, routing.topk_weight, self.pool.experts)
        shared = self.pool.shared_forward(h)
        if len(self.pool.shared):
            stats["shared_norm"] = shared.detach().norm(dim=1).sum()
            stats["routed_norm"] = routed.detach().norm(dim=1).sum()
        out = x + routed + shared
        return MoEOutput(
            out,
            load_balancing_loss(routing.probs, routing.topk_idx, self.n_experts if allowed is None else allowed.any(0).sum()),
            router_z_loss(routing.logits.masked_fill(routing.logits <= torch.finfo(routing.logits.dtype).min, -1e4)),
            routing,
            counts,
            stats,
        )

    def _communicate(self, h: torch.Tensor, routing: Routing) -> tuple[torch.Tensor, torch.Tensor, Stats]:
        """Per-slot expert outputs, exchanged within each token's group by that group's module, then combined.
        A token's group is its top-1 expert's owner (under hard routing every slot shares it)."""
        slots, counts = sparse_dispatch(h, routing.topk_idx, routing.topk_weight, self.pool.experts, return_slots=True)
        weights = routing.topk_weight.to(slots.dtype)
        owner = torch.as_tensor(self.pool.owner, device=h.device)
        token_group = owner[routing.topk_idx[:, 0]]  # (n,)
        routed = torch.zeros_like(h)
        stats: Stats = {}
        for g in token_group.unique().tolist():
            rows = (token_group == g).nonzero(as_tuple=True)[0]
            older = self._comm_mode.reads(h[rows], self.pool, g)
            combined, group_stats = self.comm[str(g)](slots[rows], weights[rows], older)
            routed = routed.index_put((rows,), combined)
            stats = add_stats(stats, group_stats)
        return routed, counts, stats
