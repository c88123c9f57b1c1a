"""Whether a later experience shares the earlier experiences' within-class covariance, judged on its own
validation split (`ClassPosterior.pooling_evidence`): the log-likelihoods equal the textbook density and
the width test equals its formula, and the decision goes the right way on Gaussian domains whose truth is
known, over 20 draws each: more of the same distribution shares; a wider (noisier) domain and a
differently shaped one with enough data to tell do not."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lifelong_moe.moe.class_posterior import ClassPosterior
from lifelong_moe.moe.class_statistics import gaussian_log_likelihood, shrunk

DIM, CLASSES = 32, 3


class Identity(nn.Module):
    """The raw input as the fixed feature space, so the test controls the feature distribution."""

    out_dim = DIM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def draw(per_class: int, factor: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian classes around fixed means, within-class covariance factor @ factor.T."""
    means = torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(7)) * 4
    y = torch.arange(CLASSES).repeat_interleave(per_class)
    return means[y] + torch.randn(len(y), DIM, generator=g) @ factor.T, y


BASE = torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(3)) / math.sqrt(DIM)  # anisotropic
OTHER = torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(4)) / math.sqrt(DIM)  # another shape
WIDER = torch.linalg.cholesky(BASE @ BASE.T + float(torch.trace(BASE @ BASE.T)) / DIM * torch.eye(DIM))  # plus as much noise


def evidence(second: torch.Tensor, n_second: int, n_val: int = 200, seed: int = 0) -> tuple[dict[str, float], ClassPosterior, dict]:
    """Experience 0: 300 samples per class of BASE; experience 1: `n_second` per class of `second`, judged
    on `n_val` held-out samples per class of it. Returns (evidence, posterior, the data)."""
    g = torch.Generator().manual_seed(seed)
    post = ClassPosterior("lda", shrinkages=(0.0, 0.1, 0.3), floors=(0.0,))
    post.add_modality("x", Identity())
    x0, y0 = draw(300, BASE, g)
    post.add_rows(0, range(CLASSES))
    post.observe({"x": (x0, torch.ones(len(y0), dtype=torch.bool))}, post.row_of(0, y0))
    post.add_rows(1, range(CLASSES))
    before = post.scatters()
    x1, y1 = draw(n_second, second, g)
    post.observe({"x": (x1, torch.ones(len(y1), dtype=torch.bool))}, post.row_of(1, y1))
    xv, yv = draw(n_val, second, g)
    out = post.pooling_evidence(1, before, ({"x": (xv, torch.ones(len(yv), dtype=torch.bool))}, post.row_of(1, yv)))
    return out, post, {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "xv": xv, "yv": yv}


def test_the_log_likelihood_is_the_gaussian_density_at_every_scale():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(DIM, DIM, generator=g, dtype=torch.float64)
    cov = a @ a.T + 0.1 * torch.eye(DIM, dtype=torch.float64)
    x = torch.randn(50, DIM, generator=g, dtype=torch.float64)
    for scale in (1.0, 2.5):
        value = gaussian_log_likelihood(x, scale * cov)
        density = torch.distributions.MultivariateNormal(torch.zeros(DIM, dtype=torch.float64), scale * cov)
        assert value == pytest.approx(float(density.log_prob(x).mean()) + DIM / 2 * math.log(2 * math.pi), rel=1e-6)


def test_the_evidence_is_computed_from_the_own_and_the_pooled_statistics():
    """Own covariance from the later experience's training data alone (the scatter added since `before`),
    pooled over both experiences, deviations about the later experience's class means scaled for their
    error; the width as the ratio of the two traces, its z-score from their Wishart sampling variances."""
    out, _, d = evidence(BASE, n_second=20)
    x1, y1, xv, yv = d["x1"].double(), d["y1"], d["xv"].double(), d["yv"]
    means1 = torch.stack([x1[y1 == c].mean(0) for c in range(CLASSES)])
    own = sum((x1[y1 == c] - means1[c]).T @ (x1[y1 == c] - means1[c]) for c in range(CLASSES)) / (len(y1) - CLASSES)
    x0, y0 = d["x0"].double(), d["y0"]
    means0 = torch.stack([x0[y0 == c].mean(0) for c in range(CLASSES)])
    scatter0 = sum((x0[y0 == c] - means0[c]).T @ (x0[y0 == c] - means0[c]) for c in range(CLASSES))
    pooled = (scatter0 + own * (len(y1) - CLASSES)) / (len(y0) + len(y1) - 2 * CLASSES)
    deviation = (xv - means1[yv]) * math.sqrt(20 / 21)
    shrinkages = (0.0, 0.1, 0.3)
    expect_own = max(gaussian_log_likelihood(deviation, shrunk(own, s)) for s in shrinkages)
    expect_pooled = max(gaussian_log_likelihood(deviation, shrunk(pooled, s)) for s in shrinkages)
    assert out["own_loglik"] == pytest.approx(expect_own, rel=1e-6)
    assert out["pooled_loglik"] == pytest.approx(expect_pooled, rel=1e-6)
    def log_trace_variance(cov: torch.Tensor, n: int) -> float:  # Wishart: E tr(S^2) = (1 + 1/n) tr(C^2) + tr(C)^2 / n
        square = (float((cov @ cov).trace()) - float(cov.trace()) ** 2 / n) / (1 + 1 / n)
        return 2 * square / (n * float(cov.trace()) ** 2)

    ratio = float(own.trace() / pooled.trace())
    error = math.sqrt(log_trace_variance(own, len(y1) - CLASSES) + log_trace_variance(pooled, len(y0) + len(y1) - 2 * CLASSES))
    assert out["width_ratio/x"] == pytest.approx(ratio, rel=1e-6)
    assert out["width_z/x"] == pytest.approx(math.log(ratio) / error, rel=1e-6)


def test_more_of_the_same_distribution_shares():
    """5 or 10 samples per class estimate a 32 x 32 covariance poorly; the 900 of the same distribution
    before help, and the width test does not fire on a spread that is the same."""
    for n_second in (5, 10):
        for seed in range(20):
            out, _, _ = evidence(BASE, n_second=n_second, seed=seed)
            assert out["pooled_loglik"] > out["own_loglik"], out
            assert abs(out["width_z/x"]) < 2.576 and out["shares"] == 1.0, out


def test_a_wider_domain_does_not_share_whatever_its_own_estimate():
    """5 samples per class of a noisier domain (twice the spread): pooling beats its own poor estimate, but
    its width differs from the pooled one, so the earlier experiences must not take it."""
    for seed in range(20):
        out, _, _ = evidence(WIDER, n_second=5, seed=seed)
        assert out["pooled_loglik"] > out["own_loglik"], out
        assert out["width_ratio/x"] > 1.3 and out["width_z/x"] > 2.576, out
        assert out["shares"] == 0.0


def test_a_differently_shaped_domain_with_enough_data_does_not_share():
    for seed in range(5):
        out, _, _ = evidence(OTHER, n_second=100, seed=seed)
        assert out["own_loglik"] > out["pooled_loglik"], out
        assert out["shares"] == 0.0


def test_no_validation_data_of_a_known_modality_is_no_evidence():
    _, post, d = evidence(BASE, n_second=20)
    xv, yv = d["xv"], d["yv"]
    assert post.pooling_evidence(1, post.scatters(), ({"x": (xv, torch.zeros(len(yv), dtype=torch.bool))}, post.row_of(1, yv))) == {}


def test_the_floor_is_ranked_by_the_statistics_then_by_the_model_then_the_smallest():
    post = ClassPosterior("lda", shrinkages=(0.1,), floors=(0.1, 0.0, 0.03, 0.3))
    assert post.floor == 0.1  # no validation data yet: the first candidate
    post.floor_correct += torch.tensor([5.0, 5.0, 5.0, 4.0])  # the statistics cannot tell 0.1, 0 and 0.03 apart
    assert post.floor == 0.0  # nor could the model: the smallest
    post.floor_model_correct += torch.tensor([7.0, 6.0, 7.0, 9.0])  # the model prefers 0.1 and 0.03 among them
    assert post.floor == 0.03
    post.floor_correct += torch.tensor([0.0, 0.0, 0.0, 2.0])  # the statistics' answers come first
    assert post.floor == 0.3
    post.floor_override = 0.1  # a candidate being scored
    assert post.floor == 0.1


def test_a_degenerate_covariance_is_no_evidence_not_a_crash():
    """A covariance without a Cholesky factor scores -inf; a modality without spread is left out."""
    assert gaussian_log_likelihood(torch.ones(4, 3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64)) == float("-inf")
    post = ClassPosterior("lda", shrinkages=(0.0,), floors=(0.0,))
    post.add_modality("x", Identity())
    y = torch.arange(CLASSES).repeat_interleave(5)
    constant = torch.ones(len(y), DIM)
    for e in range(2):
        post.add_rows(e, range(CLASSES))
        before = post.scatters()
        post.observe({"x": (constant, torch.ones(len(y), dtype=torch.bool))}, post.row_of(e, y))
    assert post.pooling_evidence(1, before, ({"x": (constant, torch.ones(len(y), dtype=torch.bool))}, post.row_of(1, y))) == {}
