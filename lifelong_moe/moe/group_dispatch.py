"""Dispatch by routed group: when every token uses all of its group's experts (hard routing with k equal to
the group's size, the MoE model's default), a group's experts act as one wider MLP whose hidden units are
scaled by the gates,

    y = sum_s w_s (W2_s gelu(W1_s x + b1_s) + b2_s) = [W2_1 .. W2_g] (w * gelu([W1_1; ..; W1_g] x + b1)) + sum_s w_s b2_s,

so each group present costs one matmul pair on its own tokens (not one per expert on duplicated tokens),
and all groups at once are one grouped matmul pair. Equal to `sparse_dispatch` up to float rounding.

Paths: `single` (one group, known on the host: training an experience; plain matmuls, differentiable, no
counts needed), `loop` (a matmul pair per group present), `padded` (every group's tokens padded to the
busiest group's count, two batched matmuls: fewest calls, some wasted rows), `grouped` (two grouped matmuls
over every group's stacked weights, offsets on the device: no host synchronisation; CUDA with bfloat16 on
sm90+). `loop` and `padded` read the counts on the host (free on CPU, one synchronisation on a GPU).
Shape key: n tokens, d width, h hidden per expert, g experts per group, G groups."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lifelong_moe.moe.cached import state
from lifelong_moe.moe.groups import GroupTable


class GroupStacks:
    """Every group's experts as one wide MLP (`group_weights`), stacked over groups: W1 (G, g*h, d), b1 (G, g*h),
    W2 (G, d, g*h), b2 (G, g, d). Kept between batches; when experts change in place (the newest group,
    trained), only their groups are copied again, so inference after an experience does not restack the
    pool. Under autograd with trainable experts: a fresh differentiable stack."""

    def __init__(self) -> None:
        self._table: GroupTable | None = None
        self._groups: list[list[nn.Module]] = []
        self._params: list[list[torch.Tensor]] = []
        self._versions: list[list[int]] = []
        self._key: tuple = ()
        self._value: tuple[torch.Tensor, ...] | None = None

    def _stack(self, groups: list[list[nn.Module]]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.stack(parts) for parts in zip(*(group_weights(group) for group in groups), strict=True))

    def __call__(self, table: GroupTable, experts: Sequence[nn.Module]) -> tuple[torch.Tensor, ...]:
        if table is not self._table:
            groups = [[experts[e] for e in table.members[g]] for g in range(len(table.members))]
            before = self._groups  # the pool grows by appending groups: the stacked ones carry over
            if len(before) > len(groups) or any(a is not b for g, h in zip(before, groups) for a, b in zip(g, h)):
                self._value = None
            self._table, self._groups = table, groups
            self._params = [[t for e in group for t in (e.fc1.weight, e.fc1.bias, e.fc2.weight, e.fc2.bias)] for group in groups]
        if torch.is_grad_enabled() and any(p.requires_grad for params in self._params for p in params):
            return self._stack(self._groups)
        versions = [[p._version for p in params] for params in self._params]  # in-place writes bump them
        key = state(self._params[0][0])  # a move of the pool shows in any member's storage
        with torch.no_grad():
            if self._value is None or key != self._key:
                self._value = self._stack(self._groups)
            else:
                have = len(self._value[0])
                if have < len(self._groups):  # groups appended: written into spare room (doubled when full)
                    self._value = tuple(_extended(stacked, part) for stacked, part in
                                        zip(self._value, self._stack(self._groups[have:]), strict=True))
                    self._versions = self._versions[:have] + versions[have:]
                for g, (old, new) in enumerate(zip(self._versions, versions, strict=True)):
                    if old != new:
                        for stacked, part in zip(self._value, group_weights(self._groups[g]), strict=True):
                            stacked[g].copy_(part)
        self._versions, self._key = versions, key
        return self._value


def _extended(stacked: torch.Tensor, more: torch.Tensor) -> torch.Tensor:
    """cat([stacked, more]) along the groups, as a view of a buffer with room to spare: appending a group
    each experience copies the pool only when the room doubles, not every time."""
    have, need = len(stacked), len(stacked) + len(more)
    room = stacked.__dict__.get("_room")
    if room is None or len(room) < need or room.data_ptr() != stacked.data_ptr():
        room = stacked.new_empty(max(2 * have, need), *stacked.shape[1:])
        room[:have] = stacked
    room[have:need] = more
    out = room[:need]
    out.__dict__["_room"] = room
    return out


def group_weights(experts: Sequence[nn.Module]) -> tuple[torch.Tensor, ...]:
    """One group's experts as one wide MLP (differentiable): W1 (g*h, d), b1 (g*h,), W2 (d, g*h), b2 (g, d)."""
    return (torch.cat([e.fc1.weight for e in experts]), torch.cat([e.fc1.bias for e in experts]),
            torch.cat([e.fc2.weight for e in experts], 1), torch.stack([e.fc2.bias for e in experts]))


def _wide_mlp(x: torch.Tensor, gates: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """x (n, d), gates (n, g) -> (n, d) for one group."""
    n, g = gates.shape
    gates = gates.to(x.dtype)
    hidden = F.gelu(F.linear(x, w1, b1)).view(n, g, -1) * gates.unsqueeze(2)  # (n, g, h)
    return torch.addmm(gates @ b2, hidden.view(n, -1), w2.T)


def default_group_path(x: torch.Tensor, counts: torch.Tensor) -> str:
    """CUDA: `grouped` where the grouped kernels run (bfloat16 on sm90+), else `padded`. CPU (reading the
    counts costs nothing there): `loop` for one group or while training; at inference `padded` where padding
    adds at most half the rows (groups about equally busy), else `grouped` (measured on CPU at 20 groups,
    512 and 2048 tokens: each the fastest of the three in its case, or within 5%)."""
    if x.device.type == "cpu":
        host = counts.tolist()
        present = sum(1 for c in host if c)
        if present <= 1 or torch.is_grad_enabled():
            return "loop"
        return "padded" if len(host) * max(host) <= 1.5 * len(x) else "grouped"
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
    ok = x.device.type == "cuda" and dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9
    return "grouped" if ok else "padded"


def group_dispatch(x: torch.Tensor, token_group: torch.Tensor | None, gates: torch.Tensor, table: GroupTable,
                   experts: Sequence[nn.Module], stacks: GroupStacks, path: str | None = None, single: int | None = None) -> torch.Tensor:
    """y (n, d) for tokens x (n, d) whose gates (n, g) weigh their group's experts in the group's order
    (`table.members`). `single`: every token is in that group (token_group unused). path: loop, grouped or
    None (`default_group_path`)."""
    if single is not None:
        return _wide_mlp(x, gates, *group_weights([experts[e] for e in table.members[single]]))
    G = len(table.members)
    order = torch.argsort(token_group, stable=True)  # tokens grouped by group
    x_sorted, gates_sorted, group_sorted = x.index_select(0, order), gates.index_select(0, order), token_group.index_select(0, order)
    counts = torch.zeros(G, dtype=torch.long, device=x.device).index_add_(0, token_group, torch.ones_like(token_group))
    path = path or default_group_path(x, counts)
    w1, b1, w2, b2 = stacks(table, experts)
    if path == "grouped":
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        offs = torch.cumsum(counts, 0).to(torch.int32)
        n, g = gates_sorted.shape
        a = x_sorted.to(dtype)
        hidden = F.gelu(F.grouped_mm(a, w1.transpose(1, 2).to(dtype), offs=offs) + b1.to(dtype)[group_sorted])  # (n, g*h)
        hidden = (hidden.view(n, g, -1) * gates_sorted.unsqueeze(2).to(dtype)).view(n, -1)
        bias = (gates_sorted.to(dtype).unsqueeze(2) * b2.to(dtype)[group_sorted]).sum(1)  # (n, d)
        y_sorted = F.grouped_mm(hidden, w2.transpose(1, 2).to(dtype), offs=offs) + bias
    elif path == "loop":
        host = counts.tolist()  # the host needs the counts: one sync per layer on a GPU
        present, sizes = [g for g, c in enumerate(host) if c], [c for c in host if c]
        n, g = gates_sorted.shape
        gates_sorted = gates_sorted.to(x.dtype)
        bias = (gates_sorted.unsqueeze(2) * b2[group_sorted]).sum(1)  # (n, d): sum_s w_s b2_s, for all at once
        w1s, b1s, w2s = w1.unbind(0), b1.unbind(0), w2.unbind(0)
        y_sorted = torch.cat([
            torch.addmm(bs, (F.gelu(torch.addmm(b1s[k], xs, w1s[k].T)).view(len(xs), g, -1) * gs.unsqueeze(2)).view(len(xs), -1), w2s[k].T)
            for k, xs, gs, bs in zip(present, x_sorted.split(sizes), gates_sorted.split(sizes), bias.split(sizes), strict=True)])
    elif path == "padded":
        capacity = int(counts.max())  # the host needs the busiest group's count: one sync per layer on a GPU
        slot = torch.arange(len(x), device=x.device) - (torch.cumsum(counts, 0) - counts)[group_sorted]  # place within its group
        n, g = gates_sorted.shape
        xp = x_sorted.new_zeros(G, capacity, x.shape[1]).index_put_((group_sorted, slot), x_sorted)  # (G, C, d)
        gp = gates_sorted.new_zeros(G, capacity, g).index_put_((group_sorted, slot), gates_sorted).to(x.dtype)  # (G, C, g)
        hidden = F.gelu(torch.baddbmm(b1.unsqueeze(1), xp, w1.transpose(1, 2)))  # (G, C, g*h)
        hidden = (hidden.view(G, capacity, g, -1) * gp.unsqueeze(3)).view(G, capacity, -1)
        y_sorted = torch.baddbmm(torch.bmm(gp, b2), hidden, w2.transpose(1, 2))[group_sorted, slot]  # (n, d)
    else:
        raise ValueError(f"unknown group dispatch path {path!r}; use loop, padded or grouped")
    return torch.empty_like(y_sorted).index_copy_(0, order, y_sorted)
