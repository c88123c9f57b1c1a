"""Top-k softmax router whose columns (one gate vector per expert) grow and freeze independently."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lifelong_moe.moe.cached import StackCache

# Up to this many experts, scoring every column and keeping each token's is cheaper than gathering each
# token's columns (measured on CPU: 3x at 40 experts and 512 tokens; the gather costs ~3 scored columns).
FULL_SCORING_UP_TO = 64


@dataclass
class Routing:
    """A routing decision. n tokens, e experts (or g: the columns a token may reach), k slots."""

    logits: torch.Tensor  # (n, e) gate logits after the bias and mask; (n, g) when `columns` is set
    probs: torch.Tensor  # softmax over the allowed experts, shaped as `logits`
    topk_idx: torch.Tensor  # (n, k) chosen experts (indices into the whole pool)
    topk_weight: torch.Tensor  # (n, k) gates: softmax over the chosen k, summing to 1 per token
    columns: torch.Tensor | None = None  # (n, g) or (g,): the expert behind each logit column (None: column e is expert e)


class TopKRouter(nn.Module):
    """Gate logits x @ w_e for each expert e; each w_e is its own Parameter, so an expert's router
    column is frozen or added without touching the others."""

    def __init__(self, dim: int, k: int, noise_std: float = 0.0) -> None:
        super().__init__()
        self.dim, self.k, self.noise_std = dim, k, noise_std
        self.columns = nn.ParameterList()
        self._stack = StackCache()
        self._column_list: list[nn.Parameter] = []

    @property
    def n_experts(self) -> int:
        return len(self.columns)

    def add_columns(self, n: int, device: torch.device | None = None) -> None:
        for _ in range(n):
            self.columns.append(nn.Parameter(torch.randn(self.dim, device=device) * self.dim**-0.5))

    def _columns(self) -> list[nn.Parameter]:
        """The columns as a plain list (a ParameterList costs a lookup per element and call)."""
        if len(self._column_list) != len(self.columns) or (self._column_list and self._column_list[0] is not self.columns[0]):
            self._column_list = list(self.columns)
        return self._column_list

    def weight(self, experts: list[int] | None = None) -> torch.Tensor:
        """(e, d) the columns stacked (those of `experts` only, when given)."""
        columns = self._columns()
        if experts is not None:
            return torch.stack([columns[e] for e in experts])
        return self._stack(columns)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> Routing:
        """x: (n, d). bias: (n, e) added to the logits (e.g. log-priors from task keys); allowed: (n, e) bool."""
        logits = x @ self.weight().T.to(x.dtype)  # (n, e)
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        if bias is not None:
            logits = logits + bias.to(logits.dtype)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
        return self._choose(logits, None, x.dtype)

    def route_in_groups(self, x: torch.Tensor, columns: torch.Tensor, valid: torch.Tensor | None,
                        experts: list[int] | None = None) -> Routing:
        """Hard routing, each token among its own group's experts only, so a token's cost does not grow with
        the pool. `columns`: (n, g) the experts each token may reach (padded where `valid` (n, g) is False),
        or (g,) one set for every token (then `experts`, the same indices on the host, lets only those
        columns be stacked). Equals `forward` with `allowed` marking the same experts, to float rounding."""
        if columns.dim() == 1:
            weight = self.weight(experts) if experts is not None else self.weight()[columns]  # (g, d)
            logits = x @ weight.T.to(x.dtype)  # (n, g)
        elif self.n_experts <= FULL_SCORING_UP_TO:  # a small pool: one matmul over it, then each token's columns
            logits = (x @ self.weight().T.to(x.dtype)).gather(1, columns)  # (n, g)
        else:  # a large pool: each token's columns gathered, a cost per token that stays flat
            logits = (self.weight()[columns].to(x.dtype) * x.unsqueeze(1)).sum(-1)  # (n, g)
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        if valid is not None:
            logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
        return self._choose(logits, columns, x.dtype)

    def _choose(self, logits: torch.Tensor, columns: torch.Tensor | None, dtype: torch.dtype) -> Routing:
        probs = logits.float().softmax(-1)
        k = min(self.k, logits.shape[-1])
        top_logits, local = logits.topk(k, dim=-1)  # (n, k)
        topk_weight = top_logits.float().softmax(-1).to(dtype)
        if columns is None:
            topk_idx = local
        elif columns.dim() == 1:
            topk_idx = columns[local]
        else:
            topk_idx = columns.gather(1, local)
        return Routing(logits, probs, topk_idx, topk_weight, columns)
