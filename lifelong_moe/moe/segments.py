"""Log-sum-exp over groups of columns in one pass, so that routing and prediction cost a fixed number of
tensor operations however many experiences, groups or classes have accumulated."""

from __future__ import annotations

import torch

from lifelong_moe.moe.cached import derived

NEG = -1e9  # the log-weight of an empty group; finite, so no NaN appears downstream


def segment_logsumexp(x: torch.Tensor, index: torch.Tensor, n_segments: int, singletons: bool | None = None) -> torch.Tensor:
    """(B, n_segments): out[b, s] = log sum_{j: index[j] = s} exp(x[b, j]); NEG where a segment is empty.
    x: (B, N) log-weights, index: (N,) segment of each column. `singletons`: every segment holds at most one
    column, when the caller knows; else found once per version of `index` and kept on it (pass a tensor that
    lives between calls, e.g. a buffer; an inference tensor, which has no version, takes the summing path)."""
    idx = index.to(x.device).expand_as(x)
    if singletons is None:
        singletons = not index.is_inference() and derived(
            index, ("singletons", n_segments), lambda: bool((torch.bincount(index, minlength=n_segments) <= 1).all()))
    if singletons:
        # every segment holds at most one column (a class-incremental stream's classes): a scatter, nothing to sum
        return x.new_full((x.shape[0], n_segments), NEG).scatter(1, idx, x.clamp_min(NEG))
    width = 0 if index.is_inference() else derived(index, ("blocks", n_segments), lambda: _block_width(index, n_segments))
    if width:  # segment s is columns s*width .. (s+1)*width - 1 (e.g. rows added experience by experience)
        return torch.logsumexp(x.reshape(x.shape[0], n_segments, width), 2).clamp_min(NEG)
    top = x.new_full((x.shape[0], n_segments), NEG).scatter_reduce(1, idx, x, reduce="amax", include_self=True).detach()
    total = x.new_zeros(x.shape[0], n_segments).scatter_add(1, idx, (x - top.gather(1, idx)).exp())
    return torch.where(total > 0, top + total.clamp_min(torch.finfo(x.dtype).tiny).log(), torch.full_like(top, NEG))


def _block_width(index: torch.Tensor, n_segments: int) -> int:
    """w where `index` is 0 (w times), 1 (w times), .., n_segments - 1: every segment one block of w columns in
    order, so a reshape finds them (no scatter); else 0."""
    width, rest = divmod(len(index), n_segments)
    if rest or not width:
        return 0
    return width if bool(torch.equal(index.cpu(), torch.arange(n_segments).repeat_interleave(width))) else 0
