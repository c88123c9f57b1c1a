"""Class statistics: streaming updates equal one batch, the classifier fitted experience by experience
equals the joint fit, and fixed feature spaces are deterministic."""

from __future__ import annotations

import pytest
import torch

from lifelong_moe.statistics.class_statistics import ClassStatistics, lda_weights
from lifelong_moe.statistics.fixed_features import BagOfWords, RandomReLUFeatures, RocketFeatures


def blobs(n_classes: int = 6, per_class: int = 40, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    means = torch.randn(n_classes, dim, generator=g) * 3
    return means[y] + torch.randn(len(y), dim, generator=g) @ torch.randn(dim, dim, generator=g), y


def batch_statistics(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The textbook definitions, computed at once in float64."""
    x = x.double()
    count = torch.bincount(y, minlength=n_classes).double()
    mean = torch.stack([x[y == c].mean(0) if (y == c).any() else torch.zeros(x.shape[1], dtype=torch.float64) for c in range(n_classes)])
    centered = x - mean[y]
    return count, mean, centered.T @ centered


def test_streaming_updates_equal_the_batch_statistics():
    x, y = blobs()
    stats = ClassStatistics(5, 8)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    for chunk in order.split(17):  # classes spread over many small, mixed batches
        stats.update(x[chunk], y[chunk])
    count, mean, scatter = batch_statistics(x, y, 8)
    assert torch.equal(stats.count, count)
    assert torch.allclose(stats.mean, mean, atol=1e-12)
    assert torch.allclose(stats.scatter, scatter, rtol=1e-10, atol=1e-9)
    assert stats.seen.tolist() == [True] * 6 + [False] * 2
    assert stats.nbytes == 8 * (8 + 8 * 5) + 4 * (5 * 6 // 2)  # counts and means in float64, the scatter's triangle in float32
    stats.settle()  # packed between experiences: float32 values, the same matrix
    assert not stats.store.is_open and torch.allclose(stats.scatter, scatter, rtol=1e-6)
    stats.update(x[:3], y[:3])  # and merged into again in float64
    assert stats.store.is_open and stats.count.sum() == len(y) + 3


@pytest.mark.parametrize(("fit", "floor"), [(lambda s: lda_weights(s, 0.1), 0.95)], ids=["lda"])
def test_fitting_experience_by_experience_equals_the_joint_fit(fit, floor):
    x, y = blobs()
    joint = ClassStatistics(5, 6)
    joint.update(x, y)
    stream = ClassStatistics(5, 6)
    for classes in ([0, 1], [2, 3], [4, 5]):
        rows = torch.isin(y, torch.tensor(classes))
        stream.update(x[rows], y[rows])
    (w1, b1), (w2, b2) = fit(joint), fit(stream)
    assert torch.allclose(w1, w2, rtol=1e-9, atol=1e-10) and torch.allclose(b1, b2, rtol=1e-9, atol=1e-10)
    predicted = (x.double() @ w2 + b2).argmax(1)
    assert (predicted == y).double().mean() > floor  # and it classifies the blobs


def test_unseen_classes_are_never_predicted():
    x, y = blobs()
    stats = ClassStatistics(5, 6)
    rows = y < 4
    stats.update(x[rows], y[rows])
    w, b = lda_weights(stats, 0.2)
    scores = x.double() @ w + b
    assert torch.isinf(scores[:, 4:]).all() and scores.argmax(1).max() < 4


def test_fixed_features_are_deterministic_and_shaped():
    signal = torch.randn(7, 2, 40)
    image = torch.rand(7, 1, 8, 8)
    for make, x, out in ((lambda s: RocketFeatures((2, 40), 50, s), signal, 100),
                         (lambda s: RocketFeatures((1, 8, 8), 30, s), image, 60)):
        a, b, c = make(0), make(0), make(1)
        assert a(x).shape == (7, out) and torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    relu = RandomReLUFeatures(64, 128, seed=0)
    relu.fit(image)
    before = relu(image)
    relu.fit(image * 5)  # fitted once: later data does not move the space
    assert torch.equal(relu(image), before) and before.shape == (7, 128) and (before >= 0).all()
    words = BagOfWords(6)(torch.tensor([[1, 1, 5, 0], [2, 0, 0, 0]]))
    assert torch.allclose(words, torch.tensor([[2 / 3, 0, 0, 0, 1 / 3], [0, 1.0, 0, 0, 0]]))


def test_a_low_rank_scatter_keeps_the_top_eigenpairs_and_the_exact_diagonal():
    from lifelong_moe.statistics.compact_scatter import CompactScatter

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g, dtype=torch.float64)
    scatter = x.T @ x
    store = CompactScatter(12, rank=4)
    store.add_(scatter)
    store.settle()
    kept = store.full()
    values, vectors = torch.linalg.eigh(scatter)
    assert torch.allclose(kept.diagonal(), scatter.diagonal(), rtol=1e-6)  # every feature's variance, so the trace
    top = vectors[:, -4:] @ torch.diag(values[-4:]) @ vectors[:, -4:].T  # the best rank-4 part
    low = (store.basis.double() * store.eigen) @ store.basis.double().T
    assert torch.allclose(low, top, atol=1e-5 * float(values[-1]))
    assert (store.diagonal >= 0).all() and torch.allclose(kept, low + torch.diag(store.diagonal))
    assert store.nbytes == 12 * 4 * 4 + 4 * 8 + 12 * 8  # float32 basis, float64 eigenvalues and diagonal
    reloaded = CompactScatter(12, rank=4)
    reloaded.load_state_dict(store.state_dict())
    assert torch.equal(reloaded.full(), kept)  # a checkpoint reopens the same matrix, bit for bit
    assert CompactScatter(12, rank=6).rank == 0  # no smaller than the triangle: kept as the triangle
