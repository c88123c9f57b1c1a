"""Sparse dispatch and combine: each expert runs once, on exactly the tokens routed to it.

The (token, slot) pairs are sorted by expert so each expert's tokens are contiguous; one matmul pair per
active expert (CPU) or one padded batched matmul pair over all experts (GPU); gate-weighted outputs are
summed back with index_add_. No token is dropped.
Shape key: n tokens, d width, k slots, e experts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lifelong_moe.moe.expert_pool import MLPExpert


def sparse_dispatch(
    x: torch.Tensor, topk_idx: torch.Tensor, topk_weight: torch.Tensor, experts: Sequence[nn.Module],
    path: str | None = None, return_slots: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """y[t] = sum_s topk_weight[t, s] * experts[topk_idx[t, s]](x[t]).

    x: (n, d); topk_idx, topk_weight: (n, k). Returns y (n, d) and per-expert token counts (e,).
    path: "loop" (one matmul pair per active expert: fastest on CPU) or "stacked" (all experts' weights
    stacked, tokens padded to the busiest expert, two batched matmuls: on a GPU the loop is bound by kernel
    launches). Default: loop on CPU, stacked elsewhere (stacked needs MLPExpert-shaped experts).
    return_slots: instead of y, each slot's expert output before the gates, (n, k, d), for communication."""
    n, k = topk_idx.shape
    if n == 0:  # e.g. a batch none of whose modalities the model knows yet
        counts = torch.zeros(len(experts), dtype=torch.long, device=x.device)
        return (x.new_zeros(0, k, x.shape[1]) if return_slots else x.new_zeros(0, x.shape[1])), counts
    flat_expert = topk_idx.reshape(-1)  # (n*k,)
    order = torch.argsort(flat_expert, stable=True)  # pairs grouped by expert
    counts = torch.bincount(flat_expert, minlength=len(experts))  # (e,)
    token_of_pair = order // k  # (n*k,)
    x_sorted = x.index_select(0, token_of_pair)  # (n*k, d)
    # torch.split, not slicing: a slice's backward writes a full-size zero gradient per expert, while
    # split's backward concatenates once (at 256 experts slicing cost 40% of the step)
    counts_host = counts.tolist()  # one host sync per layer, not per expert
    if path is None:
        path = "loop" if (x.device.type == "cpu" and torch.is_grad_enabled()) or not all(isinstance(e, MLPExpert) for e in experts) else "stacked"
    if path == "stacked":
        y_sorted = _stacked_experts(x_sorted, flat_expert[order], counts_host, experts)
    else:
        chunks = torch.split(x_sorted, counts_host)
        y_sorted = torch.cat([experts[e](chunk) for e, chunk in enumerate(chunks) if chunk.shape[0]])
    if return_slots:
        return y_sorted.new_zeros(n * k, y_sorted.shape[1]).index_copy(0, order, y_sorted).view(n, k, -1), counts
    y_sorted = y_sorted * topk_weight.reshape(-1)[order].unsqueeze(1).to(x_sorted.dtype)  # (n*k, d)
    y = torch.zeros(n, y_sorted.shape[1], dtype=y_sorted.dtype, device=x.device)
    return y.index_add_(0, token_of_pair, y_sorted), counts


def _stacked_experts(x_sorted: torch.Tensor, sorted_expert: torch.Tensor, counts_host: list, experts: Sequence[nn.Module]) -> torch.Tensor:
    """The experts that received tokens, at once: their weights stacked, tokens padded into (a, C, d), two
    batched matmuls, then gathered back. Idle (e.g. frozen, unrouted) experts cost nothing."""
    active = [e for e, c in enumerate(counts_host) if c]
    device = x_sorted.device
    local_of = torch.full((len(experts),), -1, dtype=torch.long, device=device)
    local_of[torch.as_tensor(active, device=device)] = torch.arange(len(active), device=device)
    local = local_of[sorted_expert]  # (n*k,) index among the active experts
    counts = torch.as_tensor([counts_host[e] for e in active], device=device)
    slot = torch.arange(len(sorted_expert), device=device) - (torch.cumsum(counts, 0) - counts)[local]
    chosen = [experts[e] for e in active]
    w1 = torch.stack([e.fc1.weight for e in chosen]).transpose(1, 2)  # (a, d, h)
    b1 = torch.stack([e.fc1.bias for e in chosen]).unsqueeze(1)  # (a, 1, h)
    w2 = torch.stack([e.fc2.weight for e in chosen]).transpose(1, 2)  # (a, h, d)
    b2 = torch.stack([e.fc2.bias for e in chosen]).unsqueeze(1)  # (a, 1, d)
    capacity = max(counts_host)
    padded = x_sorted.new_zeros(len(active), capacity, x_sorted.shape[1]).index_put((local, slot), x_sorted)
    hidden = F.gelu(torch.baddbmm(b1.to(padded.dtype), padded, w1.to(padded.dtype)))  # (a, C, h)
    out = torch.baddbmm(b2.to(padded.dtype), hidden, w2.to(padded.dtype))  # (a, C, d)
    return out[local, slot]  # (n*k, d) in sorted-pair order


def dense_reference(
    x: torch.Tensor, topk_idx: torch.Tensor, topk_weight: torch.Tensor, experts: Sequence[nn.Module]
) -> torch.Tensor:
    """The same combination computed the slow, obvious way (every expert on every token); for tests."""
    all_out = torch.stack([expert(x) for expert in experts], dim=1)  # (n, e, d)
    gates = torch.zeros(x.shape[0], len(experts), dtype=x.dtype, device=x.device)
    gates.scatter_add_(1, topk_idx, topk_weight.to(x.dtype))  # (n, e)
    return (gates.unsqueeze(-1) * all_out).sum(1)
