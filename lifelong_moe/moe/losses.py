"""Auxiliary router losses (plain functions of the router's outputs).

Shape key: n tokens, e experts, k experts per token."""

from __future__ import annotations

import torch


def load_balancing_loss(probs: torch.Tensor, topk_idx: torch.Tensor, n_experts: int | torch.Tensor,
                        columns: torch.Tensor | None = None, n_total: int | None = None,
                        token_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Switch/GShard balance loss E * sum_e f_e * P_e: f_e is the share of (token, slot) pairs sent to
    expert e, P_e the mean router probability of e. Equals 1 when routing is uniform over E experts;
    pass as E the number of experts the tokens could reach.

    probs: (n, e) softmax over experts; topk_idx: (n, k). Under hard routing by group, probs is (n, g) over
    each token's own group and `columns` (n, g) or (g,) names the expert of each column, out of `n_total`.
    `token_weight` (n,) 0/1: the tokens that count (absent modalities' tokens are computed but do not).
    Counts are sums, not `bincount` (which waits for the host on a GPU)."""
    n, k = topk_idx.shape
    total = probs.shape[1] if columns is None else int(n_total)
    w = probs.new_ones(n) if token_weight is None else token_weight.to(probs.dtype)
    tokens = w.sum().clamp_min(1.0) if token_weight is not None else n
    f = probs.new_zeros(total).index_add_(0, topk_idx.reshape(-1), w.repeat_interleave(k)) / (tokens * k)
    weighted = probs if token_weight is None else probs * w.unsqueeze(1)
    if columns is None:
        p = weighted.sum(0) / tokens if token_weight is not None else probs.mean(0)
    else:
        p = probs.new_zeros(total).index_add_(0, columns.expand_as(probs).reshape(-1), weighted.reshape(-1)) / tokens
    return n_experts * (f * p).sum()


def router_z_loss(logits: torch.Tensor, token_weight: torch.Tensor | None = None) -> torch.Tensor:
    """ST-MoE z-loss mean(logsumexp(logits)^2): keeps router logits small. logits: (n, e); `token_weight`
    (n,) 0/1: the tokens that count."""
    z = torch.logsumexp(logits.float(), dim=-1).pow(2)
    if token_weight is None:
        return z.mean()
    w = token_weight.to(z.dtype)
    return (z * w).sum() / w.sum().clamp_min(1.0)
