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
sm90+, and the CPU at inference). `loop` and `padded` read the counts on the host (free on CPU, one
synchronisation on a GPU). The grouped path carries both biases inside its matmuls (`augmented_weights`):
gathering a bias row per token cost as much as the matmuls on a mixed batch on CPU. The CPU's grouped
matmul is a loop over every group, empty ones included (about 1.3 us each), so where the CPU chooses the
grouped path itself (no `path` given) it runs over the span of groups present alone (a view of the stacks;
the counts are on the host anyway): 4% less time per sample on sorted batches after 100 experiences, where
a batch spans 13-14 of the 100 groups. `path="grouped"` is the device path exactly, as CUDA runs it.
Shape key: n tokens, d width, h hidden per expert, g experts per group, G groups."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lifelong_moe.moe.cached import state
from lifelong_moe.moe.dispatch import GROUPED_DTYPES, compute_dtype
from lifelong_moe.moe.groups import GroupTable


class GroupStacks:
    """Every group's experts as one wide MLP (`group_weights`), stacked over groups: W1 (G, g*h, d), b1 (G, g*h),
    W2 (G, d, g*h), b2 (G, g, d). Kept between batches; when experts change in place (the newest group,
    trained), only their groups are copied again, so inference after an experience does not restack the
    pool. Under autograd with trainable experts: a fresh differentiable stack."""

    def __init__(self) -> None:
        self._table: GroupTable | None = None
        self._groups: list[list[nn.Module]] = []
        self._params: list[torch.Tensor] = []  # every member's weights and biases, group after group
        self._param_group: list[int] = []  # the group of each
        self._versions: list[int] = []
        self._key: tuple = ()
        self._value: tuple[torch.Tensor, ...] | None = None
        self._generation = 0  # bumped whenever the stacks' values change (rebuilt, moved, appended or copied into)
        self._augmented: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    def augmented(self, table: GroupTable, experts: Sequence[nn.Module], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, int]:
        """`augmented_weights` of the stacks in `dtype` and the groups' hidden width g*h, kept while the stacks
        hold the same values."""
        stacked = self(table, experts)
        gh = stacked[0].shape[1]
        if torch.is_grad_enabled() and any(t.requires_grad for t in stacked):
            return *(t.to(dtype) for t in augmented_weights(*stacked)), gh
        # the stacks' own record of what they hold (`_generation`): the stacks themselves may be inference
        # tensors, which keep no version
        key = (dtype, self._generation)
        if self._augmented is None or self._augmented[0] != key:
            with torch.no_grad():
                self._augmented = (key, tuple(t.to(dtype) for t in augmented_weights(*stacked)))
        return *self._augmented[1], gh

    def _stack(self, groups: list[list[nn.Module]]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.stack(parts) for parts in zip(*(group_weights(group) for group in groups), strict=True))

    def __call__(self, table: GroupTable, experts: Sequence[nn.Module]) -> tuple[torch.Tensor, ...]:
        if table is not self._table:
            groups = [[experts[e] for e in table.members[g]] for g in range(len(table.members))]
            before = self._groups  # the pool grows by appending groups: the stacked ones carry over
            if len(before) > len(groups) or any(len(g) != len(h) or any(a is not b for a, b in zip(g, h))
                                                for g, h in zip(before, groups)):
                self._value = None
            self._table, self._groups = table, groups
            self._params = [t for group in groups for e in group for t in (e.fc1.weight, e.fc1.bias, e.fc2.weight, e.fc2.bias)]
            self._param_group = [g for g, group in enumerate(groups) for _ in range(4 * len(group))]
        if torch.is_grad_enabled() and any(p.requires_grad for p in self._params):
            return self._stack(self._groups)
        versions = [p._version for p in self._params]  # in-place writes bump them; one flat list, compared once
        key = state(self._params[0])  # a move of the pool shows in any member's storage
        with torch.no_grad():
            if self._value is None or key != self._key:
                self._value = self._stack(self._groups)
                self._generation += 1
            elif versions != self._versions:
                have = len(self._value[0])
                if have < len(self._groups):  # groups appended: written into spare room (doubled when full)
                    self._value = tuple(_extended(stacked, part) for stacked, part in
                                        zip(self._value, self._stack(self._groups[have:]), strict=True))
                changed = {g for g, old, new in zip(self._param_group, self._versions, versions) if old != new and g < have}
                for g in sorted(changed):
                    for stacked, part in zip(self._value, group_weights(self._groups[g]), strict=True):
                        stacked[g].copy_(part)
                self._generation += 1
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


def _room(width: int, spare: int) -> int:
    """Columns to add to `width` for at least `spare` spare ones and a multiple of 8 in all (grouped matmuls
    want strides of 16 bytes: 4 float32 or 8 bfloat16 values)."""
    return spare + (-(width + spare)) % 8


def augmented_weights(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stacks (`GroupStacks`) as two matmuls with their biases inside: W1a (G, d + p, g*h + q) holds b1 in
    row d (read by a column of ones beside x), W2a (G, g*h + q, d + r) holds each expert's b2 in rows g*h ..
    g*h + g (read by the gates beside the hidden units): sum_s w_s b2_s without a bias gathered per token.
    The spare rows and columns (p, q, r: `_room`) are zero."""
    G, gh, d = w1.shape
    g = b2.shape[1]
    w1a = w1.new_zeros(G, d + _room(d, 1), gh + _room(gh, g))
    w1a[:, :d, :gh] = w1.transpose(1, 2)
    w1a[:, d, :gh] = b1
    w2a = w2.new_zeros(G, w1a.shape[2], d + _room(d, 0))
    w2a[:, :gh, :d] = w2.transpose(1, 2)
    w2a[:, gh : gh + g, :d] = b2
    return w1a, w2a


def _grouped_wide_mlp(x: torch.Tensor, gates: torch.Tensor, counts: torch.Tensor, w1a: torch.Tensor, w2a: torch.Tensor,
                      gh: int) -> torch.Tensor:
    """x (n, d) sorted by group, `counts` (G,) of each: every group's wide MLP (g*h = `gh` hidden units) by two
    grouped matmuls over the augmented weights (`augmented_weights`); the group offsets stay on the device."""
    d, g = x.shape[1], gates.shape[1]
    offs = torch.cumsum(counts, 0).to(torch.int32)
    xa = F.pad(x.to(w1a.dtype), (0, w1a.shape[1] - d))
    xa[:, d] = 1.0
    hidden = F.gelu(F.grouped_mm(xa, w1a, offs=offs))  # (n, g*h + q); the spare columns are gelu(0) = 0
    gates = gates.to(hidden.dtype)
    if torch.is_grad_enabled():
        scaled = (hidden[:, :gh].unflatten(1, (g, -1)) * gates.unsqueeze(2)).flatten(1)
        hidden = torch.cat([scaled, gates, hidden[:, gh + g :]], 1)
    else:
        hidden[:, :gh].unflatten(1, (g, -1)).mul_(gates.unsqueeze(2))
        hidden[:, gh : gh + g] = gates
    y = F.grouped_mm(hidden, w2a, offs=offs)
    return y if y.shape[1] == d else y[:, :d]


def _wide_mlp(x: torch.Tensor, gates: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """x (n, d), gates (n, g) -> (n, d) for one group."""
    n, g = gates.shape
    gates = gates.to(x.dtype)
    hidden = F.gelu(F.linear(x, w1, b1)).view(n, g, -1) * gates.unsqueeze(2)  # (n, g, h)
    return torch.addmm(gates @ b2, hidden.view(n, -1), w2.T)


def default_group_path(x: torch.Tensor, counts: torch.Tensor) -> str:
    """CUDA: `grouped` where the grouped kernels run (bfloat16 on sm90+), else `padded`. CPU: `grouped` at
    inference with more than one group present (float32 or narrower), else `loop`. Measured on CPU for this
    function alone at 20 groups, 512 and 2048 tokens spread over 5, 17 or 20 groups: `grouped` 1.0-1.4x the
    time of one group's matmuls on the same tokens, `loop` 1.1-3.3x, `padded` 1.5-8x; for the whole model,
    `inference_scaling` on the results page."""
    dtype = compute_dtype(x)
    if x.device.type == "cpu":  # grouped matmuls take float32, bfloat16 and float16, not float64
        grouped = not torch.is_grad_enabled() and dtype in GROUPED_DTYPES and int((counts > 0).sum()) > 1
        return "grouped" if grouped else "loop"
    ok = x.device.type == "cuda" and dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9
    return "grouped" if ok else "padded"


def group_dispatch(x: torch.Tensor, token_group: torch.Tensor | None, gates: torch.Tensor, table: GroupTable,
                   experts: Sequence[nn.Module], stacks: GroupStacks, path: str | None = None, single: int | None = None,
                   counts: torch.Tensor | None = None) -> torch.Tensor:
    """y (n, d) for tokens x (n, d) whose gates (n, g) weigh their group's experts in the group's order
    (`table.members`). `single`: every token is in that group (token_group unused). `counts` (G,): the tokens
    come sorted by group, that many each (`GroupRoute.by_group`), so nothing is reordered here. path: loop,
    padded, grouped or None (`default_group_path`)."""
    if single is not None:
        return _wide_mlp(x, gates, *group_weights([experts[e] for e in table.members[single]]))
    G = len(table.members)
    order = None
    if counts is None:
        order = torch.argsort(token_group, stable=True)  # tokens grouped by group
        x, gates, token_group = x.index_select(0, order), gates.index_select(0, order), token_group.index_select(0, order)
        counts = torch.zeros(G, dtype=torch.long, device=x.device).index_add_(0, token_group, torch.ones_like(token_group))
    chosen = path or default_group_path(x, counts)
    n, g = gates.shape
    if chosen == "grouped":
        w1a, w2a, gh = stacks.augmented(table, experts, compute_dtype(x))
        if path is None and x.device.type == "cpu":  # the CPU's own choice: only the span of groups present (a view)
            present = counts.nonzero()
            span = slice(int(present[0]), int(present[-1]) + 1) if len(present) else slice(0, 1)
            w1a, w2a, counts = w1a[span], w2a[span], counts[span]
        y = _grouped_wide_mlp(x, gates, counts, w1a, w2a, gh)
    elif chosen == "loop":
        host = counts.tolist()  # the host needs the counts: one sync per layer on a GPU
        present, sizes = [k for k, c in enumerate(host) if c], [c for c in host if c]
        w1, b1, w2, b2 = stacks(table, experts)
        y = torch.cat([_wide_mlp(xs, gs, w1[k], b1[k], w2[k], b2[k])
                       for k, xs, gs in zip(present, x.split(sizes), gates.split(sizes), strict=True)]) if present else torch.zeros_like(x)
    elif chosen == "padded":
        w1, b1, w2, b2 = stacks(table, experts)
        capacity = int(counts.max())  # the host needs the busiest group's count: one sync per layer on a GPU
        slot = torch.arange(n, device=x.device) - (torch.cumsum(counts, 0) - counts)[token_group]  # place within its group
        xp = x.new_zeros(G, capacity, x.shape[1]).index_put_((token_group, slot), x)  # (G, C, d)
        gp = gates.new_zeros(G, capacity, g).index_put_((token_group, slot), gates).to(x.dtype)  # (G, C, g)
        hidden = F.gelu(torch.baddbmm(b1.unsqueeze(1), xp, w1.transpose(1, 2)))  # (G, C, g*h)
        hidden = (hidden.view(G, capacity, g, -1) * gp.unsqueeze(3)).view(G, capacity, -1)
        y = torch.baddbmm(torch.bmm(gp, b2), hidden, w2.transpose(1, 2))[token_group, slot]  # (n, d)
    else:
        raise ValueError(f"unknown group dispatch path {chosen!r}; use loop, padded or grouped")
    return y if order is None else torch.empty_like(y).index_copy_(0, order, y)
