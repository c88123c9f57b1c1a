"""Class statistics in a fixed feature space: per-class counts and means, and the pooled within-class
scatter, accumulated in float64 with exact streaming merges. No sample is ever kept.

From them comes a classifier over every class seen so far, without task labels: LDA with one shared
covariance, shrunk towards a multiple of the identity (SLDA, Hayes & Kanan 2020; RanPAC, McDonnell et al.
2023, on random features). Where the features are fixed, fitting experience by experience gives the same
statistics, and so the same classifier, as fitting all data at once (up to float rounding).

Merging two parts with counts n1, n2, means m1, m2 and scatters S1, S2 (Chan et al. 1979):
n = n1 + n2, m = (n1 m1 + n2 m2) / n, S = S1 + S2 + (n1 n2 / n) (m1 - m2)(m1 - m2)^T.
Shape key: N samples, D features, C classes."""

from __future__ import annotations

import torch
from torch import nn

from lifelong_moe.moe.cached import derived
from lifelong_moe.statistics.compact_scatter import CompactScatter


class ClassStatistics(nn.Module):
    """Counts (C,) and means (C, D) as float64 buffers, and the pooled within-class scatter (D, D), merged in
    float64 and kept compact between experiences (`compact_scatter.py`; `rank`: 0 or low rank plus
    diagonal). Buffers travel with checkpoints bit for bit; `settle()` packs the scatter."""

    def __init__(self, dim: int, n_classes: int, rank: int = 0) -> None:
        super().__init__()
        self.dim, self.n_classes = dim, n_classes
        self.register_buffer("count", torch.zeros(n_classes, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_classes, dim, dtype=torch.float64))
        self.store = CompactScatter(dim, rank)

    @property
    def scatter(self) -> torch.Tensor:
        """(D, D) float64."""
        return self.store.full()

    def settle(self) -> None:
        """Pack the scatter until more samples arrive."""
        self.store.settle()

    def grow(self, n_classes: int) -> None:
        """Room for `n_classes` rows (e.g. (experience, class) pairs arriving with the stream)."""
        if n_classes <= self.n_classes:
            return
        extra = n_classes - self.n_classes
        self.count = torch.cat([self.count, self.count.new_zeros(extra)])
        self.mean = torch.cat([self.mean, self.mean.new_zeros(extra, self.dim)])
        self.n_classes = n_classes

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.grow(state_dict[prefix + "count"].shape[0])  # a checkpoint may hold more rows than a fresh module
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in (self.count, self.mean)) + self.store.nbytes

    @property
    def seen(self) -> torch.Tensor:
        """(C,) bool: classes with at least one sample."""
        return self.count > 0

    @property
    def n_seen(self) -> int:
        """Classes with at least one sample, on the host (read every forward, counted once per update)."""
        return derived(self.count, "n_seen", lambda: int(self.seen.sum()))

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add samples x (N, D) with labels y (N,)."""
        x = x.to(torch.float64)
        classes, inverse = torch.unique(y, return_inverse=True)
        n_b = torch.bincount(inverse, minlength=len(classes)).to(torch.float64)  # (k,)
        m_b = torch.zeros(len(classes), self.dim, dtype=torch.float64, device=x.device).index_add_(0, inverse, x) / n_b[:, None]
        centered = x - m_b[inverse]
        self._merge(classes, n_b, m_b, centered.T @ centered)

    def _merge(self, classes: torch.Tensor, n_b: torch.Tensor, m_b: torch.Tensor, scatter_b: torch.Tensor) -> None:
        n_a, m_a = self.count[classes], self.mean[classes]
        n = n_a + n_b
        delta = m_b - m_a  # (k, D)
        weight = n_a * n_b / n  # (k,): zero for classes new to these statistics
        self.store.add_(scatter_b + (delta * weight[:, None]).T @ delta)
        self.mean[classes] = m_a + delta * (n_b / n)[:, None]
        self.count[classes] = n

    def covariance(self) -> torch.Tensor:
        """The pooled within-class covariance (D, D): scatter / (N - C) over the seen classes."""
        dof = self.count.sum() - self.seen.sum()
        return self.scatter / dof.clamp_min(1.0)


def shrunk(cov: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """(1 - a) * cov + a * (tr(cov) / D) * I."""
    d = cov.shape[0]
    target = torch.trace(cov) / d
    return (1.0 - shrinkage) * cov + shrinkage * target * torch.eye(d, dtype=cov.dtype, device=cov.device)


def jittered(cov: torch.Tensor) -> torch.Tensor:
    """cov plus 1e-9 of its mean eigenvalue on the diagonal: a factorisation of a singular one still runs.
    Where the mean eigenvalue is 0 (features constant within every class, e.g. a constant input column),
    1 instead: a jitter of 0 left the solve singular."""
    d = cov.shape[0]
    scale = torch.trace(cov) / d
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return cov + 1e-9 * scale * torch.eye(d, dtype=cov.dtype, device=cov.device)


def lda_weights(stats: ClassStatistics, shrinkage: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear discriminant (W (D, C), b (C,)) over the seen classes with equal priors: score_c(x) =
    x^T S^-1 m_c - m_c^T S^-1 m_c / 2; unseen classes get W = 0 and b = -inf. Solved, never inverted."""
    seen = stats.seen
    cov = jittered(shrunk(stats.covariance(), shrinkage))
    means = stats.mean[seen]  # (c, D)
    solved = torch.linalg.solve(cov, means.T)  # (D, c) = S^-1 m
    W = torch.zeros(stats.dim, stats.n_classes, dtype=torch.float64, device=cov.device)
    b = torch.full((stats.n_classes,), float("-inf"), dtype=torch.float64, device=cov.device)
    W[:, seen] = solved
    b[seen] = -0.5 * (means * solved.T).sum(1)
    return W, b
