"""One MoE block: pre-norm, top-k routing over a growable expert pool, sparse dispatch, shared experts,
residual. Returns an explicit result carrying the auxiliary losses and the routing decision."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lifelong_moe.moe.communication import COMMUNICATION, Stats, add_stats
from lifelong_moe.moe.dispatch import sparse_dispatch
from lifelong_moe.moe.expert_pool import ExpertPool
from lifelong_moe.moe.group_dispatch import GroupStacks, group_dispatch
from lifelong_moe.moe.groups import GroupRoute, GroupTable
from lifelong_moe.moe.losses import load_balancing_loss, router_z_loss
from lifelong_moe.moe.router import Routing, TopKRouter


@dataclass
class MoEOutput:
    hidden: torch.Tensor  # (n, d)
    balance_loss: torch.Tensor  # scalar (0 where gradients are off: inference)
    z_loss: torch.Tensor  # scalar (0 where gradients are off)
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
        self._groups: GroupTable | None = None
        self._group_stacks = GroupStacks()
        self.dispatch_path: str | None = None  # loop, padded or grouped (dispatch.py, group_dispatch.py); None: by device and dtype

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

    def group_table(self, device: torch.device) -> GroupTable:
        """The experts of each group, rebuilt when the pool grows or moves."""
        table = self._groups  # the pool only grows by appending: its size says whether the table is current
        if table is None or table.size != len(self.pool) or table.experts.device != device:
            table = self._groups = GroupTable.of(self.pool.owner, device)
        return table

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, allowed: torch.Tensor | None = None,
                route: GroupRoute | None = None, token_weight: torch.Tensor | None = None) -> MoEOutput:
        """x: (n, d); bias, allowed: (n, e) router log-prior and mask; or `route`: hard routing, each token within
        its group's experts (its router columns alone are scored: the same result as `allowed` marking them).
        token_weight: (n,) 0/1, the tokens the losses and reports count (None: all)."""
        h = self.norm(x)
        if route is not None:
            table = self.group_table(h.device)
            routing = self.router.route_in_groups(h, *table.columns(route))
        else:
            routing = self.router(h, bias=bias, allowed=allowed)
        stats: Stats = {}
        if len(self.comm):
            routed, counts, stats = self._communicate(h, routing)
        elif route is not None and table.uniform and routing.topk_idx.shape[1] == table.width:
            # every token uses all its group's experts: each group is one wide MLP (moe/group_dispatch.py)
            gates = torch.zeros_like(routing.topk_weight).scatter(1, table.position[routing.topk_idx], routing.topk_weight)
            routed = group_dispatch(h, route.token_group, gates, table, self.pool.experts, self._group_stacks,
                                    self.dispatch_path, single=route.single, counts=route.counts)
            flat = routing.topk_idx.reshape(-1)
            counts = torch.zeros(self.n_experts, dtype=torch.long, device=h.device).index_add_(0, flat, torch.ones_like(flat))
        elif route is not None and route.single is not None:  # one group: its experts alone enter the dispatch
            members = table.members[route.single]
            local = table.position[routing.topk_idx]  # (n, k) index within the group
            routed, counts = sparse_dispatch(h, local, routing.topk_weight, [self.pool.experts[e] for e in members],
                                             path=self.dispatch_path)
            counts = counts.new_zeros(self.n_experts).index_copy_(0, table.experts[route.single, : len(members)], counts)
        else:
            routed, counts = sparse_dispatch(h, routing.topk_idx, routing.topk_weight, self.pool.experts,
                                             path=self.dispatch_path, stacks=self.pool.stacks)
        out = x + routed
        if len(self.pool.shared):
            shared = self.pool.shared_forward(h)
            w = 1.0 if token_weight is None else token_weight.to(h.dtype)
            stats["shared_norm"] = (shared.detach().norm(dim=1) * w).sum()
            stats["routed_norm"] = (routed.detach().norm(dim=1) * w).sum()
            out = out + shared
        if torch.is_grad_enabled():
            logits = routing.logits
            if route is not None or allowed is not None:  # masked logits count as -1e4 (exp of it is 0 in float32)
                logits = logits.masked_fill(logits <= torch.finfo(logits.dtype).min, -1e4)
            reachable = table.reachable(route) if route is not None else self.n_experts if allowed is None else allowed.any(0).sum()
            balance = load_balancing_loss(routing.probs, routing.topk_idx, reachable, columns=routing.columns,
                                          n_total=self.n_experts, token_weight=token_weight)
            z_loss = router_z_loss(logits, token_weight)
        else:  # the auxiliary losses only shape gradients: inference skips them
            balance = z_loss = out.new_zeros(())
        return MoEOutput(out, balance, z_loss, routing, counts, stats)

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
