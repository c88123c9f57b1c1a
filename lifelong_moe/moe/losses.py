"""Auxiliary router losses (plain functions of the router's outputs).

Shape key: n tokens, e experts, k experts per token."""

from __future__ import annotations

import torch


def load_balancing_loss(probs: torch.Tensor, topk_idx: torch.Tensor, n_experts: int | torch.Tensor) -> torch.Tensor:
    """Switch/GShard balance loss E * sum_e f_e * P_e: f_e is the share of (token, slot) pairs sent to
    expert e, P_e the mean router probability of e. Equals 1 when routing is uniform over E experts;
    pass as E the number of experts the tokens could reach.

    probs: (n, e) softmax over experts; topk_idx: (n, k)."""
    n, k = topk_idx.shape
    counts = torch.bincount(topk_idx.reshape(-1), minlength=probs.shape[1]).to(probs.dtype)
    f = counts / (n * k)
    p = probs.mean(0)
    return n_experts * (f * p).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE z-loss mean(logsumexp(logits)^2): keeps router logits small. logits: (n, e)."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
