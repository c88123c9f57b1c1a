"""The MoE model's forward under hard routing, at a cost per sample that does not grow with the stream:
each sample runs only its routed experience's experts (`moe/groups.py`) and head, while the statistics
score every row (that is what routing is: one matmul in `statistics/`).

- `ExperienceTables`: index tables of the grown structure (experience -> group, head columns, classes) on
  the model's device, rebuilt only when an experience is added or the model moves, so a forward builds
  nothing from Python lists (on a GPU, no host-to-device copy per batch).
- `token_layout`: every (sample, modality) token in a fixed layout, absent ones weighted 0 (finding the
  present ones would take a `nonzero`, which waits for the host on a GPU); or only the present ones.
- `routed_prediction`: log p(c | x) by the formula of `moe_model.py`, with p_experts computed from the
  routed head alone (its weights gathered per sample) instead of every head on every sample.
Shape key: B samples, M modalities, n present tokens, D width, K head columns, k a head's columns, C classes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lifelong_moe.moe.cached import StackCache
from lifelong_moe.moe.segments import NEG, segment_logsumexp


@dataclass(frozen=True)
class ExperienceTables:
    """Experiences with a head, in order (host), and on the device: each one's group (n_exp,), each head
    column's experience (K,) and class (K,), and each experience's columns (n_exp, k_max), padded with its
    first column (`head_valid` False there)."""

    experiences: list[int]
    experience: torch.Tensor
    group_of: torch.Tensor
    col: torch.Tensor
    classes: torch.Tensor
    head_cols: torch.Tensor
    head_valid: torch.Tensor
    weights: list[torch.Tensor]  # the heads' weights and biases, in column order (for `HeadStacks`)
    biases: list[torch.Tensor]
    distinct_classes: bool  # no class in two heads (class-incremental): p(c | x) needs no sum over columns

    @staticmethod
    def of(heads: nn.ModuleDict, experience_group: dict[int, int], device: torch.device) -> ExperienceTables:
        exps = sorted(int(e) for e in heads)
        modules = [heads[str(e)] for e in exps]
        sizes = [len(h.classes) for h in modules]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        width = max(sizes, default=0)
        cols = [[s + j if j < n else s for j in range(width)] for s, n in zip(starts, sizes, strict=True)]
        valid = [[j < n for j in range(width)] for n in sizes]
        as_long = lambda v: torch.tensor(v, dtype=torch.long, device=device)  # noqa: E731
        return ExperienceTables(
            exps, as_long(exps), as_long([experience_group[e] for e in exps]),
            as_long([i for i, n in enumerate(sizes) for _ in range(n)]),
            torch.cat([h.classes for h in modules]).to(device) if modules else as_long([]),
            as_long(cols).reshape(len(exps), width), torch.tensor(valid, dtype=torch.bool, device=device).reshape(len(exps), width),
            [h.linear.weight for h in modules], [h.linear.bias for h in modules],
            len({c for h in modules for c in h.classes.tolist()}) == sum(sizes))

    @property
    def n_columns(self) -> int:
        return len(self.col)


class HeadStacks:
    """Every head's weights (K, D) and biases (K,) in column order, kept while none changes."""

    def __init__(self) -> None:
        self._weight, self._bias = StackCache(torch.cat), StackCache(torch.cat)

    def __call__(self, tables: ExperienceTables) -> tuple[torch.Tensor, torch.Tensor]:
        return self._weight(tables.weights), self._bias(tables.biases)


@dataclass(frozen=True)
class Tokens:
    h: torch.Tensor  # (n, D)
    sample: torch.Tensor  # (n,) the sample of each token
    modality: torch.Tensor  # (n,) its modality (order of the encoders)
    present: torch.Tensor  # (n,) bool: the modality is present in the sample (absent tokens count for nothing)
    presence: torch.Tensor  # (B, M) bool

    def reordered(self, order: torch.Tensor) -> Tokens:
        """The same tokens in the order `order` (n,)."""
        pick = lambda v: v.index_select(0, order)  # noqa: E731
        return Tokens(pick(self.h), pick(self.sample), pick(self.modality), pick(self.present), self.presence)


def token_layout(tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor], only_present: bool = False) -> Tokens:
    """The (sample, modality) tokens, sample by sample: all B * M of them (absent ones marked), so the layout
    needs no `nonzero`; or, `only_present`, the present ones alone (for per-group code that waits anyway)."""
    z = torch.stack(list(tokens.values()), 1)  # (B, M, D)
    pres = torch.stack(list(present.values()), 1)  # (B, M)
    B, M = pres.shape
    if only_present:
        sample, modality = pres.nonzero(as_tuple=True)  # (n,), (n,)
        return Tokens(z[sample, modality], sample, modality, torch.ones_like(sample, dtype=torch.bool), pres)
    sample = torch.arange(B, device=z.device).repeat_interleave(M)
    modality = torch.arange(M, device=z.device).repeat(B)
    return Tokens(z.reshape(B * M, -1), sample, modality, pres.reshape(-1), pres)


def routed_prediction(pooled: torch.Tensor, head: tuple[torch.Tensor, torch.Tensor], tables: ExperienceTables,
                      stat: torch.Tensor, log_pe: torch.Tensor, routed: torch.Tensor, weight: float | torch.Tensor,
                      n_classes: int, mix: Callable[..., torch.Tensor], parts: bool = True
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """log p(c | x) (B, C) and each part alone (`parts`, else {}). pooled (B, D); head: stacked weights (K, D) and
    biases (K,); stat: log p_stat(c | x, e) per head column (B, K); log_pe (B, n_exp); routed (B,) experience
    column; weight: w, one or per column (K,); mix(stat, experts, w) as in `moe_model._mix`."""
    W, b = head
    K = tables.n_columns
    cols, valid = tables.head_cols[routed], tables.head_valid[routed]  # (B, k)
    scores = torch.einsum("bd,bkd->bk", pooled, W[cols]) + b[cols]  # the routed head only
    experts = scores.masked_fill(~valid, -math.inf).log_softmax(1)  # log p_experts(c | x, routed e)
    w = weight[cols] if isinstance(weight, torch.Tensor) else weight
    spill = torch.where(valid, cols, K)  # padding lands in one spare column, dropped after
    mixed = torch.cat([stat, stat[:, :1]], 1).scatter(1, spill, mix(stat.gather(1, cols), experts, w))[:, :K]
    by_class = lambda s: segment_logsumexp(s, tables.classes, n_classes, tables.distinct_classes)  # noqa: E731
    logits = by_class(mixed + log_pe[:, tables.col])
    if not parts:
        return logits, {}
    on_classes = torch.where(valid, tables.classes[cols], n_classes)
    experts_part = pooled.new_full((len(pooled), n_classes + 1), NEG).scatter(1, on_classes, experts)[:, :n_classes]
    return logits, {"statistics": by_class(stat + log_pe[:, tables.col]), "experts": experts_part}
