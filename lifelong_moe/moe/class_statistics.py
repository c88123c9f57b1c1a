"""Class statistics in a fixed feature space: per-class counts and means, and the pooled within-class
scatter, accumulated in float64 with exact streaming merges. No sample is ever kept.

From them come classifiers over every class seen so far, without task labels: LDA (one shared covariance,
shrunk towards a multiple of the identity) and ridge regression on one-hot targets (RanPAC). Where the
features are fixed, fitting experience by experience gives the same statistics, and so the same
classifier, as fitting all data at once (up to float rounding).

Merging two parts with counts n1, n2, means m1, m2 and scatters S1, S2 (Chan et al. 1979):
n = n1 + n2, m = (n1 m1 + n2 m2) / n, S = S1 + S2 + (n1 n2 / n) (m1 - m2)(m1 - m2)^T.
Shape key: N samples, D features, C classes."""

from __future__ import annotations

import torch
from torch import nn


class ClassStatistics(nn.Module):
    """Counts (C,), means (C, D) and the pooled within-class scatter (D, D), as float64 buffers (so they
    travel with checkpoints bit for bit)."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.dim, self.n_classes = dim, n_classes
        self.register_buffer("count", torch.zeros(n_classes, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_classes, dim, dtype=torch.float64))
        self.register_buffer("scatter", torch.zeros(dim, dim, dtype=torch.float64))

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
        return sum(b.numel() * b.element_size() for b in (self.count, self.mean, self.scatter))

    @property
    def seen(self) -> torch.Tensor:
        """(C,) bool: classes with at least one sample."""
        return self.count > 0

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add samples x (N, D) with labels y (N,)."""
        x = x.to(torch.float64)
        classes, inverse = torch.unique(y, return_inverse=True)
        n_b = torch.bincount(inverse, minlength=len(classes)).to(torch.float64)  # (k,)
        m_b = torch.zeros(len(classes), self.dim, dtype=torch.float64, device=x.device).index_add_(0, inverse, x) / n_b[:, None]
        centered = x - m_b[inverse]
        self._merge(classes, n_b, m_b, centered.T @ centered)

    @torch.no_grad()
    def merge(self, count: torch.Tensor, mean: torch.Tensor, scatter: torch.Tensor) -> None:
        """Add another part's statistics (e.g. another process's), given for every class."""
        classes = torch.nonzero(count > 0, as_tuple=True)[0]
        self._merge(classes, count[classes].to(torch.float64), mean[classes].to(torch.float64), scatter.to(torch.float64))

    def _merge(self, classes: torch.Tensor, n_b: torch.Tensor, m_b: torch.Tensor, scatter_b: torch.Tensor) -> None:
        n_a, m_a = self.count[classes], self.mean[classes]
        n = n_a + n_b
        delta = m_b - m_a  # (k, D)
        weight = n_a * n_b / n  # (k,): zero for classes new to these statistics
        self.scatter += scatter_b + (delta * weight[:, None]).T @ delta
        self.mean[classes] = m_a + delta * (n_b / n)[:, None]
        self.count[classes] = n

    def covariance(self) -> torch.Tensor:
        """The pooled within-class covariance (D, D): scatter / (N - C) over the seen classes."""
        dof = self.count.sum() - self.seen.sum()
        return self.scatter / dof.clamp_min(1.0)

    def oas_shrinkage(self) -> float:
        """The Oracle Approximating Shrinkage intensity (Chen et al. 2010) towards tr(S)/D * I: computed
        from the statistics alone, so it needs no held-out data."""
        cov, d = self.covariance(), float(self.dim)
        n = float(self.count.sum() - self.seen.sum())
        tr, tr2 = float(torch.trace(cov)), float((cov * cov).sum())
        denominator = (n + 1.0 - 2.0 / d) * (tr2 - tr * tr / d)
        return 1.0 if denominator <= 0 else min(1.0, ((1.0 - 2.0 / d) * tr2 + tr * tr) / denominator)


def shrunk(cov: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """(1 - a) * cov + a * (tr(cov) / D) * I."""
    d = cov.shape[0]
    target = torch.trace(cov) / d
    return (1.0 - shrinkage) * cov + shrinkage * target * torch.eye(d, dtype=cov.dtype, device=cov.device)


def mean_eigenvalue(matrix: torch.Tensor) -> torch.Tensor:
    """tr(matrix) / D, or 1 where that is zero (features constant within every class): the scale of
    the ridge and the jitter, which must not vanish with it."""
    scale = torch.trace(matrix) / matrix.shape[0]
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def jittered(cov: torch.Tensor, floor: bool = False) -> torch.Tensor:
    """cov plus 1e-9 of its mean eigenvalue on the diagonal: a factorisation of a singular one still runs.
    `floor`: 1 instead of a mean eigenvalue of 0 (no spread at all), for a solve that must run."""
    d = cov.shape[0]
    scale = mean_eigenvalue(cov) if floor else torch.trace(cov) / d
    return cov + 1e-9 * scale * torch.eye(d, dtype=cov.dtype, device=cov.device)


def gaussian_log_likelihood(x: torch.Tensor, cov: torch.Tensor) -> float:
    """Mean log-density of the rows of x (N, D) under N(0, cov), up to the constant -D/2 log(2 pi); a
    covariance without a Cholesky factor (not positive definite) gives -inf."""
    chol, info = torch.linalg.cholesky_ex(jittered(cov))
    if int(info) != 0:
        return float("-inf")
    q = float(torch.linalg.solve_triangular(chol, x.to(cov.dtype).T, upper=False).pow(2).sum(0).mean())
    return -0.5 * (q + 2.0 * float(chol.diagonal().log().sum()))


def lda_weights(stats: ClassStatistics, shrinkage: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear discriminant (W (D, C), b (C,)) over the seen classes with equal priors: score_c(x) =
    x^T S^-1 m_c - m_c^T S^-1 m_c / 2; unseen classes get W = 0 and b = -inf. Solved, never inverted."""
    seen = stats.seen
    cov = jittered(shrunk(stats.covariance(), shrinkage), floor=True)
    means = stats.mean[seen]  # (c, D)
    solved = torch.linalg.solve(cov, means.T)  # (D, c) = S^-1 m
    W = torch.zeros(stats.dim, stats.n_classes, dtype=torch.float64, device=cov.device)
    b = torch.full((stats.n_classes,), float("-inf"), dtype=torch.float64, device=cov.device)
    W[:, seen] = solved
    b[seen] = -0.5 * (means * solved.T).sum(1)
    return W, b


def ridge_weights(stats: ClassStatistics, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression on one-hot targets with an unpenalised intercept (RanPAC): W = (G + r I)^-1 Q over
    features centred on the overall mean, with G and Q rebuilt from the statistics; `ridge` is relative to
    the mean eigenvalue of G (r = ridge * tr(G) / D). Unseen classes get b = -inf."""
    seen = stats.seen
    n, m = stats.count[seen], stats.mean[seen]
    total = n.sum()
    overall = (m * n[:, None]).sum(0) / total  # (D,)
    offset = m - overall  # (c, D)
    gram = stats.scatter + (offset * n[:, None]).T @ offset  # centred: sum (x - overall)(x - overall)^T
    targets = (offset * n[:, None]).T  # (D, c): sum (x - overall) y^T
    eye = torch.eye(stats.dim, dtype=gram.dtype, device=gram.device)
    solved = torch.linalg.solve(gram + ridge * mean_eigenvalue(gram) * eye, targets)  # (D, c)
    W = torch.zeros(stats.dim, stats.n_classes, dtype=torch.float64, device=gram.device)
    b = torch.full((stats.n_classes,), float("-inf"), dtype=torch.float64, device=gram.device)
    W[:, seen] = solved
    b[seen] = n / total - overall @ solved
    return W, b


def pooled(stats: ClassStatistics, group: torch.Tensor, n_groups: int) -> ClassStatistics:
    """Statistics of groups of rows (e.g. every (experience, class) row of one class): what one row per
    group would hold had all its samples arrived together. `group`: (C,) the group of each row."""
    group = group.to(stats.count.device)
    out = ClassStatistics(stats.dim, n_groups).to(stats.count.device)
    out.count.index_add_(0, group, stats.count)
    out.mean.index_add_(0, group, stats.mean * stats.count[:, None])
    out.mean /= out.count.clamp_min(1.0)[:, None]
    spread = (stats.mean - out.mean[group]) * stats.seen[:, None]  # (C, D) row mean about its group's
    out.scatter.copy_(stats.scatter + (spread * stats.count[:, None]).T @ spread)
    return out
