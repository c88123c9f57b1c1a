"""Top-k softmax router whose columns (one gate vector per expert) grow and freeze independently."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Routing:
    """A routing decision. n tokens, e experts, k slots."""

    logits: torch.Tensor  # (n, e) gate logits after the bias and mask
    probs: torch.Tensor  # (n, e) softmax over all allowed experts
    topk_idx: torch.Tensor  # (n, k) chosen experts
    topk_weight: torch.Tensor  # (n, k) gates: softmax over the chosen k, summing to 1 per token


class TopKRouter(nn.Module):
    """Gate logits x @ w_e for each expert e; each w_e is its own Parameter, so an expert's router
    column is frozen or added without touching the others."""

    def __init__(self, dim: int, k: int, noise_std: float = 0.0) -> None:
        super().__init__()
        self.dim, self.k, self.noise_std = dim, k, noise_std
        self.columns = nn.ParameterList()

    @property
    def n_experts(self) -> int:
        return len(self.columns)

    def add_columns(self, n: int, device: torch.device | None = None) -> None:
        for _ in range(n):
            self.columns.append(nn.Parameter(torch.randn(self.dim, device=device) * self.dim**-0.5))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> Routing:
        """x: (n, d). bias: (n, e) added to the logits (e.g. log-priors from task keys); allowed: (n, e) bool."""
        weight = torch.stack(list(self.columns), dim=1)  # (d, e)
        logits = x @ weight.to(x.dtype)  # (n, e)
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        if bias is not None:
            logits = logits + bias.to(logits.dtype)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
        probs = logits.float().softmax(-1)
        k = min(self.k, logits.shape[-1])
        top_logits, topk_idx = logits.topk(k, dim=-1)  # (n, k)
        topk_weight = top_logits.float().softmax(-1).to(x.dtype)
        return Routing(logits, probs, topk_idx, topk_weight)
