"""Communication between experts inside one MoE layer, chosen by name (`communication:` in the MoE params).

- `none`: experts do not exchange anything (the combination is the gate-weighted sum).
- `lateral`: a group's experts also read the mean output of every older (frozen) group's experts through
  a learned adapter with a learned gate, so old knowledge flows forward while the old experts stay unchanged.
- `pnn`: Progressive Neural Networks' laterals, in every MoE layer: a group's output also reads the hidden
  units of each older group's experts (on the same layer input) through that older group's own adapter
  (learned scale, reduction, GELU, projection), not only a mean output.
- `attention`: the outputs of the k experts chosen for a token, plus a summary of the older groups'
  experts, attend to each other before they are combined.
- `shared`: nothing between routed experts; always-on shared experts keep training across experiences,
  anchored to their previous values (the model applies the anchor; see `anchors_shared_experts`).

Every module here belongs to one group (the experience that grew it) and is frozen with that group, so
what an old experience computes never changes: its experts, and the modules that feed them, are fixed.
Adapters start at zero, so a new group begins exactly as with `none`.

A mode is one registration: a `CommunicationMode` holding the per-group module factory and the function
that turns the statistics its modules return (sums over tokens) into the report in results.json; the
report's `scalars` go to TensorBoard as `communication/<name>`.
Shape key: n tokens, d width, k slots, e experts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong_moe.moe.expert_pool import ExpertPool
from lifelong_moe.registry import Registry

Stats = dict[str, torch.Tensor]  # named sums over tokens, added up over batches and ranks


def _no_report(layers: Sequence[nn.Module], stats: list[list[Stats]]) -> dict[str, Any]:
    return {}


def older_summary(h: torch.Tensor, pool: ExpertPool, group: int) -> torch.Tensor | None:
    """Mean output of the experts of groups older than `group` on tokens h (n, d), or None if there are none."""
    older = [e for e, g in zip(pool.experts, pool.owner, strict=True) if g < group]
    if not older:
        return None
    return torch.stack([e(h) for e in older]).mean(0)


@dataclass(frozen=True)
class CommunicationMode:
    """`build(dim)` makes the module a new group adds to each layer (None: nothing to add); it is called
    as `module(slots (n, k, d), weights (n, k), older) -> (combined (n, d), stats)`, where `older` is
    `reads(h, pool, group)` on the group's tokens h (n, d): by default the older groups' mean output (n, d),
    or None when there are no older groups. `report(layers, stats)` gets, per layer and test experience,
    the summed stats of an evaluation."""

    build: Callable[[int], nn.Module | None]
    report: Callable[[Sequence[nn.Module], list[list[Stats]]], dict[str, Any]] = _no_report
    anchors_shared_experts: bool = False  # shared experts keep training, pulled to their previous values
    doc: str = ""
    reads: Callable[[torch.Tensor, ExpertPool, int], Any] = older_summary

    def module_for(self, pool: ExpertPool, group: int) -> nn.Module | None:
        """The module `group` adds to a layer whose pool holds the older groups' experts (not yet its own)."""
        return self.build(pool.dim)


COMMUNICATION: Registry[CommunicationMode] = Registry("communication mode")


class LateralAdapter(nn.Module):
    """tanh(gate) * W(mean of older experts' outputs): added to what the group's experts produce."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.gate = nn.Parameter(torch.tensor(0.5))

    def forward(self, slots: torch.Tensor, weights: torch.Tensor, older: torch.Tensor | None) -> tuple[torch.Tensor, Stats]:
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

    def forward(self, slots: torch.Tensor, weights: torch.Tensor, older: torch.Tensor | None) -> tuple[torch.Tensor, Stats]:
        ctx = slots if older is None else torch.cat([slots, older.unsqueeze(1)], 1)  # (n, k[+1], d)
        attn = torch.softmax(self.q(slots) @ self.k(ctx).transpose(1, 2) * self.scale, dim=-1)  # (n, k, k[+1])
        mixed = slots + self.out(attn @ self.v(ctx))
        summed = attn.detach().sum(0)
        if older is None:  # no older groups: the summary column is reported as 0
            summed = torch.cat([summed, summed.new_zeros(summed.shape[0], 1)], -1)
        return (mixed * weights.unsqueeze(-1)).sum(1), {"attention_sum": summed, "attention_count": attn.new_tensor(float(len(attn)))}


class ColumnLaterals(nn.Module):
    """Per older group j: U_j GELU(V_j (a_j * hidden units of j's experts)), added to the group's output.
    U_j starts at zero, so the group starts as under `none`; the learned scale a_j (at 1) lets the group
    turn an older group's input down or up, as in Progressive Neural Networks."""

    def __init__(self, dim: int, older_widths: dict[int, int]) -> None:
        super().__init__()
        self.scale = nn.ParameterDict({str(g): nn.Parameter(torch.tensor(1.0)) for g in older_widths})
        self.reduce = nn.ModuleDict({str(g): nn.Linear(w, dim) for g, w in older_widths.items()})
        self.project = nn.ModuleDict({str(g): nn.Linear(dim, dim) for g in older_widths})
        for proj in self.project.values():
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, slots: torch.Tensor, weights: torch.Tensor, older: dict[int, torch.Tensor]) -> tuple[torch.Tensor, Stats]:
        """older: each older group's experts' hidden units on these tokens, (n, width of that group)."""
        combined = (slots * weights.unsqueeze(-1)).sum(1)
        if not len(self.project):
            return combined, {}
        lateral = sum(self.project[g](F.gelu(self.reduce[g](self.scale[g] * older[int(g)]))) for g in self.project)
        return combined + lateral, {"lateral_norm": lateral.detach().norm(dim=1).sum(),
                                    "own_norm": combined.detach().norm(dim=1).sum()}


def _older_groups(pool: ExpertPool, group: int) -> list[int]:
    return sorted({g for g in pool.owner if g < group})


def older_hidden(h: torch.Tensor, pool: ExpertPool, group: int) -> dict[int, torch.Tensor]:
    """Per group older than `group`: its experts' hidden units on tokens h (n, d), concatenated (n, e_g * hidden)."""
    return {g: torch.cat([expert.hidden_units(h) for expert in pool.experts_of(g)], -1) for g in _older_groups(pool, group)}


@dataclass(frozen=True)
class ColumnLateralMode(CommunicationMode):
    """A mode whose module is sized by the older groups in the pool (one adapter per older group)."""

    def module_for(self, pool: ExpertPool, group: int) -> nn.Module | None:
        return ColumnLaterals(pool.dim, {g: len(pool.experts_of(g)) * pool.hidden for g in _older_groups(pool, group)})


def _norm_shares(stats: list[list[Stats]], part: str, rest: str) -> list[float]:
    """Per test experience: the summed norm `part` over `part` + `rest`, both summed over layers."""
    shares = []
    for j in range(len(stats[0]) if stats else 0):
        a = sum(float(per_exp[j].get(part, 0.0)) for per_exp in stats)
        b = sum(float(per_exp[j].get(rest, 0.0)) for per_exp in stats)
        shares.append(a / max(a + b, 1e-12))
    return shares


def _pnn_report(layers: Sequence[nn.Module], stats: list[list[Stats]]) -> dict[str, Any]:
    """The laterals' share of each test experience's routed output norm (summed over layers), and per layer
    and group the norm of each older group's projection: what the group learned to read."""
    shares = _norm_shares(stats, "lateral_norm", "own_norm")
    weights = [{int(g): {int(o): float(p.weight.norm()) for o, p in m.project.items()} for g, m in layer.comm.items()}
               for layer in layers]
    scalars = {f"pnn_share/exp{j:02d}": v for j, v in enumerate(shares)}
    return {"lateral_share": shares, "lateral_weight_norm": weights, "scalars": scalars}


def _lateral_report(layers: Sequence[nn.Module], stats: list[list[Stats]]) -> dict[str, Any]:
    """tanh(gate) of each group's adapter, per layer: how much each group reads from the older groups."""
    gates = [{int(g): float(torch.tanh(m.gate)) for g, m in layer.comm.items()} for layer in layers]
    scalars = {f"lateral_gate/layer{i}_group{g}": v for i, per in enumerate(gates) for g, v in per.items()}
    return {"lateral_gates": gates, "scalars": scalars}


def _attention_report(layers: Sequence[nn.Module], stats: list[list[Stats]]) -> dict[str, Any]:
    """Mean attention among each test experience's chosen experts; the last column is the older summary."""
    attention = []
    for layer, per_exp in zip(layers, stats, strict=True):
        k = layer.router.k
        rows = []
        for s in per_exp:
            total = s.get("attention_sum", torch.zeros(k, k + 1))
            rows.append((total / s.get("attention_count", torch.tensor(0.0)).clamp_min(1)).tolist())
        attention.append(rows)  # [test experience][slot][slot or summary]
    scalars = {f"attention_to_older/layer{i}_exp{j:02d}": float(sum(r[-1] for r in a) / len(a))
               for i, per_exp in enumerate(attention) for j, a in enumerate(per_exp)}
    return {"attention": attention, "scalars": scalars}


def _shared_report(layers: Sequence[nn.Module], stats: list[list[Stats]]) -> dict[str, Any]:
    """The shared experts' share of the output norm, per test experience, summed over layers."""
    shares = _norm_shares(stats, "shared_norm", "routed_norm")
    return {"shared_share": shares, "scalars": {f"shared_share/exp{j:02d}": v for j, v in enumerate(shares)}}


COMMUNICATION.register("none")(CommunicationMode(lambda dim: None, doc="Experts exchange nothing: the gate-weighted sum."))
COMMUNICATION.register("lateral")(CommunicationMode(LateralAdapter, _lateral_report, doc=LateralAdapter.__doc__))
COMMUNICATION.register("attention")(CommunicationMode(SlotAttention, _attention_report, doc=SlotAttention.__doc__))
COMMUNICATION.register("pnn")(ColumnLateralMode(lambda dim: None, _pnn_report, reads=older_hidden, doc=ColumnLaterals.__doc__))
COMMUNICATION.register("shared")(CommunicationMode(lambda dim: None, _shared_report, anchors_shared_experts=True,
                                                   doc="Always-on shared experts keep training, anchored to their last values."))



def add_stats(total: Stats, more: Stats) -> Stats:
    """Sum two stats dicts key by key (keys absent from one side count as zero)."""
    out = dict(total)
    for key, value in more.items():
        out[key] = out[key] + value if key in out else value
    return out
