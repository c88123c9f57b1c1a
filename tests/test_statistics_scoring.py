"""The statistics' scoring written for speed equals its textbook form: log-sum-exp by segment (with the
singleton shortcut of class-incremental streams) and the product over modalities with floors, modality
mismatch and rows no present modality knows."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lifelong_moe.moe.segments import NEG, segment_logsumexp
from lifelong_moe.statistics.classifier import MODALITY_MISMATCH, StatisticsClassifier


def logsumexp_by_segment(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.full((x.shape[0], n), NEG)
    for s in range(n):
        cols = (index == s).nonzero(as_tuple=True)[0]
        if len(cols):
            out[:, s] = torch.logsumexp(x[:, cols], 1).clamp_min(NEG)
    return out


@pytest.mark.parametrize(("index", "empty_last"), [([3, 0, 2, 5], True), ([0, 0, 2, 1, 1, 1], True), ([4], True), ([0, 0, 1, 1, 2, 2], False)],
                         ids=["singletons", "summed", "one", "blocks"])
def test_segment_logsumexp_equals_a_logsumexp_per_segment(index, empty_last):
    """Every path (a scatter for singletons, a reshape for equal blocks in order, scatters otherwise)."""
    index = torch.tensor(index)
    x = torch.randn(7, len(index), generator=torch.Generator().manual_seed(0)) * 5
    x[0, 0], x[1, -1] = -math.inf, 2 * NEG  # a column that is impossible, one below the floor of the scale
    x[2, :2] = -math.inf  # a segment with nothing possible
    n = int(index.max()) + (2 if empty_last else 1)  # the last segment stays empty
    got = segment_logsumexp(x, index, n)
    assert torch.allclose(got, logsumexp_by_segment(x, index, n), atol=1e-5)
    assert torch.isfinite(got).all()
    if len(index) > 1 and index[0] == index[1]:  # both impossible columns of row 2 make up one segment
        assert got[2, index[0]] == NEG
    if empty_last:
        assert (got[:, -1] == NEG).all()


class Identity(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def textbook_rows(clf: StatisticsClassifier, feats: dict, floor: float) -> torch.Tensor:
    """log p(row | x) as first written: a log-sum-exp mix per modality, a mismatch count per modality."""
    B = next(iter(feats.values()))[0].shape[0]
    total, mismatch = torch.zeros(B, clf.n_rows), torch.zeros(B, clf.n_rows)
    for m, (z, keep) in feats.items():
        logp = (z @ getattr(clf, f"W_{m}") + getattr(clf, f"b_{m}")).log_softmax(1)
        known, present = clf.stats[m].seen, keep.unsqueeze(1).float()
        uniform = -math.log(max(clf.stats[m].n_seen, 1))
        mixed = torch.logaddexp(logp + math.log(max(1 - floor, 1e-12)), torch.full_like(logp, uniform + math.log(max(floor, 1e-12))))
        total = total + torch.where(known, mixed, torch.zeros_like(mixed)) * present
        mismatch = mismatch + (known.float().unsqueeze(0) != present).float()
    for m, stats in clf.stats.items():
        if m not in feats:
            mismatch = mismatch + stats.seen.float().unsqueeze(0)
    any_known = torch.stack([clf.stats[m].seen.unsqueeze(0) & keep.unsqueeze(1) for m, (_, keep) in feats.items()]).any(0)
    return torch.where(any_known, total - MODALITY_MISMATCH * mismatch, torch.full_like(total, NEG)).log_softmax(1)


@pytest.mark.parametrize("floor", [0.0, 0.1, 0.3])
def test_rows_posterior_equals_the_textbook_product_over_modalities(floor):
    g = torch.Generator().manual_seed(0)
    clf = StatisticsClassifier(shrinkages=[0.1], floors=[floor])
    dims = {"a": 6, "b": 4, "c": 5}
    for m, d in dims.items():
        clf.add_modality(m, Identity(d))
    means = {m: torch.randn(6, d, generator=g) * 3 for m, d in dims.items()}
    for e, classes in enumerate(([0, 1], [2, 3], [4, 5])):
        clf.add_rows(e, classes)
        y = torch.tensor(classes).repeat_interleave(30)
        held = ("a", "b") if e < 2 else ("a", "c")  # experience 2 came without b and with c: rows differ in what they know
        feats = {m: (means[m][y] + torch.randn(len(y), dims[m], generator=g), torch.ones(len(y), dtype=torch.bool)) for m in held}
        clf.observe(feats, y)
    clf.fit()
    y = torch.arange(6).repeat(10)
    batch = {m: (means[m][y] + torch.randn(len(y), d, generator=g), torch.rand(len(y), generator=g) > 0.35) for m, d in dims.items()}
    batch["a"][1][:3] = batch["b"][1][:3] = batch["c"][1][:3] = False  # samples with no modality at all
    for feats in (batch, {m: batch[m] for m in ("a", "b")}):  # and a batch that lacks c altogether
        got, want = clf.row_log_posterior(feats), textbook_rows(clf, feats, clf.floor)
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-5)
        assert torch.equal(got.argmax(1), want.argmax(1))
