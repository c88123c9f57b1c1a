"""Sparse dispatch and combine: each expert runs once, on exactly the tokens routed to it.

The (token, slot) pairs are sorted by expert so each expert's tokens are contiguous; then one of three
paths runs the experts, and gate-weighted outputs are summed back with index_add_. No token is dropped.
- `loop`: one matmul pair per expert that received tokens (the fastest on CPU; needs the counts on the host).
- `grouped`: one grouped matmul (`torch.nn.functional.grouped_mm`) over the experts' stacked weights, cut
  by offsets that stay on the device: no host synchronisation (CUDA with bfloat16 on sm90 or newer).
- `padded`: the active experts' weights stacked, tokens padded to the busiest one, two batched matmuls
  (the GPU path where grouped matmuls do not run; one host synchronisation per layer for the counts).
Shape key: n tokens, d width, h hidden, k slots, e experts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lifelong_moe.moe.expert_pool import ExpertStacks, MLPExpert

PATHS = ("loop", "grouped", "padded")
GROUPED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what grouped matmuls take (not float64)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype x's matmuls run in: autocast's where it is on for x's device, else x's own."""
    return torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype


def default_path(x: torch.Tensor, experts: Sequence[nn.Module], counts: torch.Tensor) -> str:
    """On CUDA: `grouped` where the grouped kernels run (bfloat16, by autocast or by the tensors, on sm90 or
    newer), `padded` elsewhere. On CPU (where reading the counts costs nothing): `loop`, except at inference
    when many experts share few pairs, where one grouped call beats a matmul pair per expert (measured in
    experiments/bench_inference_scaling.py: from about one expert per 64 pairs). Other experts: `loop`."""
    if not all(isinstance(e, MLPExpert) for e in experts):
        return "loop"
    dtype = compute_dtype(x)
    # grouped matmuls want rows of 16 bytes: the width and the hidden width in whole 16-byte steps
    aligned = all(w * dtype.itemsize % 16 == 0 for w in (x.shape[1], experts[0].fc1.out_features))
    if x.device.type == "cpu":
        active = int((counts > 0).sum())
        many = active > 8 and active * 64 > len(x) * 2
        return "grouped" if aligned and dtype in GROUPED_DTYPES and not torch.is_grad_enabled() and many else "loop"
    if aligned and x.device.type == "cuda" and dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9:
        return "grouped"
    return "padded"


def sparse_dispatch(
    x: torch.Tensor, topk_idx: torch.Tensor, topk_weight: torch.Tensor, experts: Sequence[nn.Module],
    path: str | None = None, return_slots: bool = False, stacks: ExpertStacks | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """y[t] = sum_s topk_weight[t, s] * experts[topk_idx[t, s]](x[t]).

    x: (n, d); topk_idx, topk_weight: (n, k). Returns y (n, d) and per-expert token counts (e,).
    path: loop, grouped or padded (module docstring); None: `default_path`. `stacks` keeps the stacked
    weights of the batched paths between calls while they do not change (e.g. frozen experts at inference).
    return_slots: instead of y, each slot's expert output before the gates, (n, k, d), for communication."""
    n, k = topk_idx.shape
    if n == 0:  # e.g. a batch none of whose modalities the model knows yet
        counts = torch.zeros(len(experts), dtype=torch.long, device=x.device)
        return (x.new_zeros(0, k, x.shape[1]) if return_slots else x.new_zeros(0, x.shape[1])), counts
    flat_expert = topk_idx.reshape(-1)  # (n*k,)
    order = torch.argsort(flat_expert, stable=True)  # pairs grouped by expert
    counts = torch.zeros(len(experts), dtype=torch.long, device=x.device).index_add_(0, flat_expert, torch.ones_like(flat_expert))
    token_of_pair = order // k  # (n*k,)
    x_sorted = x.index_select(0, token_of_pair)  # (n*k, d)
    path = path or default_path(x, experts, counts)
    if path == "grouped":
        y_sorted = _grouped_experts(x_sorted, flat_expert[order], counts, experts, stacks or ExpertStacks())
    elif path == "padded":
        y_sorted = _padded_experts(x_sorted, flat_expert[order], counts.tolist(), experts)
    elif path == "loop":
        # torch.split, not slicing: a slice's backward writes a full-size zero gradient per expert, while
        # split's backward concatenates once (at 256 experts slicing cost 40% of the step)
        counts_host = counts.tolist()  # one host sync per layer, not per expert
        active = [e for e, c in enumerate(counts_host) if c]
        chunks = torch.split(x_sorted, [counts_host[e] for e in active])
        y_sorted = torch.cat([_run(experts[e], chunk) for e, chunk in zip(active, chunks, strict=True)])
    else:
        raise ValueError(f"unknown dispatch path {path!r}; use one of {', '.join(PATHS)}")
    if return_slots:
        return y_sorted.new_zeros(n * k, y_sorted.shape[1]).index_copy(0, order, y_sorted).view(n, k, -1), counts
    y_sorted = y_sorted * topk_weight.reshape(-1)[order].unsqueeze(1).to(y_sorted.dtype)  # (n*k, d)
    y = torch.zeros(n, y_sorted.shape[1], dtype=y_sorted.dtype, device=x.device)
    return y.index_add_(0, token_of_pair, y_sorted), counts


def _run(expert: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """expert(x); an MLPExpert's two matmuls called directly (the module calls cost more than the matmuls
    on the small chunks of a mixed batch)."""
    if type(expert) is MLPExpert:
        fc1, fc2 = expert.fc1, expert.fc2
        return F.linear(F.gelu(F.linear(x, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    return expert(x)


def _grouped_experts(x_sorted: torch.Tensor, sorted_expert: torch.Tensor, counts: torch.Tensor,
                     experts: Sequence[nn.Module], stacks: ExpertStacks) -> torch.Tensor:
    """Every expert at once by two grouped matmuls over their stacked weights; the groups' ends (offsets)
    and the per-pair biases are gathered on the device, so nothing waits for the host."""
    w1, b1, w2, b2 = stacks(experts)  # (e, h, d), (e, h), (e, d, h), (e, d)
    dtype = compute_dtype(x_sorted)
    offs = torch.cumsum(counts, 0).to(torch.int32)  # (e,) end of each expert's pairs
    a = x_sorted.to(dtype)
    hidden = F.gelu(F.grouped_mm(a, w1.transpose(1, 2).to(dtype), offs=offs) + b1.to(dtype)[sorted_expert])  # (n*k, h)
    return F.grouped_mm(hidden, w2.transpose(1, 2).to(dtype), offs=offs) + b2.to(dtype)[sorted_expert]  # (n*k, d)


def _padded_experts(x_sorted: torch.Tensor, sorted_expert: torch.Tensor, counts_host: list, experts: Sequence[nn.Module]) -> torch.Tensor:
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
