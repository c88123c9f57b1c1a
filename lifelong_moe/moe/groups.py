"""Hard routing by group: each token may reach only the experts of one group (the experience its sample
was routed to), so a layer scores only that group's router columns and runs only its experts, whatever
the size of the pool. Shape key: n tokens, G groups, g the largest group's experts."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GroupRoute:
    """The group of each token: `token_group` (n,) on the device, or one group for every token (`single`,
    known on the host: training one experience), which lets a layer stack that group's columns alone."""

    token_group: torch.Tensor | None = None
    single: int | None = None
    counts: torch.Tensor | None = None  # (G,) tokens per group, when the tokens come sorted by group (`by_group`)

    @staticmethod
    def by_group(token_group: torch.Tensor, n_groups: int) -> tuple[GroupRoute, torch.Tensor]:
        """The route of tokens reordered so each group's are contiguous, and that order (n,): a forward sorts
        its tokens once, and every layer then cuts them by `counts` instead of sorting and unsorting them."""
        order = torch.argsort(token_group, stable=True)
        counts = torch.zeros(n_groups, dtype=torch.long, device=token_group.device).index_add_(0, token_group, torch.ones_like(token_group))
        return GroupRoute(token_group.index_select(0, order), counts=counts), order


@dataclass(frozen=True)
class GroupTable:
    """A layer's experts by group: `experts` (G, g) indices, padded with the group's first expert where a group
    holds fewer than g (`valid` False there), and the same on the host (`members`)."""

    experts: torch.Tensor
    valid: torch.Tensor
    members: dict[int, list[int]]
    size: int  # experts in the pool when the table was built
    position: torch.Tensor  # (e,) each expert's place within its group
    uniform: bool  # every group id up to the largest holds the same number of experts (no padding)

    @property
    def width(self) -> int:
        return self.experts.shape[1]

    @staticmethod
    def of(owner: list[int], device: torch.device) -> GroupTable:
        members: dict[int, list[int]] = {}
        for e, g in enumerate(owner):
            members.setdefault(g, []).append(e)
        n_groups, width = max(members, default=-1) + 1, max((len(m) for m in members.values()), default=0)
        rows = [members.get(g, [0]) for g in range(n_groups)]  # a group id without experts: padding only
        experts = torch.tensor([r + [r[0]] * (width - len(r)) for r in rows], dtype=torch.long).reshape(n_groups, width)
        valid = torch.tensor([[j < len(members.get(g, [])) for j in range(width)] for g in range(n_groups)], dtype=torch.bool)
        position = [0] * len(owner)
        for m in members.values():
            for j, e in enumerate(m):
                position[e] = j
        return GroupTable(experts.to(device), valid.reshape(n_groups, width).to(device), members, len(owner),
                          torch.tensor(position, dtype=torch.long, device=device),
                          all(len(members.get(g, ())) == width for g in range(n_groups)))

    def columns(self, route: GroupRoute) -> tuple[torch.Tensor, torch.Tensor | None, list[int] | None]:
        """(columns, valid, host indices) for `TopKRouter.route_in_groups`."""
        if route.single is not None:
            members = self.members[route.single]
            return self.experts[route.single, : len(members)], None, members
        return self.experts[route.token_group], self.valid[route.token_group], None

    def reachable(self, route: GroupRoute) -> int | torch.Tensor:
        """How many experts the tokens could reach (the E of the balance loss): the present groups' experts."""
        if route.single is not None:
            return len(self.members[route.single])
        present = torch.zeros(len(self.experts), dtype=torch.bool, device=self.experts.device)
        present[route.token_group] = True
        return (self.valid.sum(1) * present).sum()
