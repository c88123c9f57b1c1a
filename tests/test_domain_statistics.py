"""Domain-incremental learning: statistics of a class that recurs accumulate across experiences, exactly as
if its data had arrived at once, and the reuse-or-grow decision is a deterministic function of the data."""

from __future__ import annotations

import torch
from test_class_statistics import batch_statistics, blobs

from conftest import build_model_and_stream, tiny_config, train_experience
from lifelong_moe.moe.class_statistics import ClassStatistics, pooled


def domain_stream(dim: int = 6, n_train: int = 30, n_test: int = 10) -> dict:
    """Three synthetic domains of the same 3 classes, one per experience."""
    params = {"n_classes": 3, "n_modalities": 2, "dim": dim, "n_train_per_class": n_train, "n_test_per_class": n_test, "separation": 3.0}
    return {"scenario": "domain_incremental", "experiences": [{"source": f"d{k}"} for k in range(3)],
            "sources": {f"d{k}": {"kind": "synthetic", "params": {**params, "domain": k}} for k in range(3)}}


DOMAINS = domain_stream()


def test_pooled_rows_equal_the_statistics_of_the_pooled_data():
    x, y = blobs(n_classes=6, per_class=25)
    stats = ClassStatistics(5, 6)  # rows 0-2: classes 0-2 in one experience, rows 3-5: the same classes later
    for chunk in torch.randperm(len(y), generator=torch.Generator().manual_seed(2)).split(11):
        stats.update(x[chunk], y[chunk])
    by_class = pooled(stats, torch.tensor([0, 1, 2, 0, 1, 2]), 3)
    count, mean, scatter = batch_statistics(x, y % 3, 3)
    assert torch.equal(by_class.count, count)
    assert torch.allclose(by_class.mean, mean, atol=1e-12)
    assert torch.allclose(by_class.scatter, scatter, rtol=1e-10, atol=1e-9)


def _domain_model(tmp_path, **params):
    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, **params}})
    cfg["stream"] = DOMAINS
    cfg["train"]["epochs"] = 1
    return build_model_and_stream(cfg)


def test_a_recurring_class_accumulates_statistics_over_experiences(tmp_path):
    cfg, stream, model = _domain_model(tmp_path)
    for i, exp in enumerate(stream.train_stream):
        train_experience(cfg, model, exp, seed=i)
    post = model.statistics.posterior
    assert post.row_class.tolist() == [0, 1, 2] * 3 and post.row_experience.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    for m in post.views:
        feats, labels = [], []
        for exp in stream.train_stream:  # every sample each experience added: its training and validation data
            for dataset in (exp.dataset, exp.validation):
                for x, present, y in model._batches(dataset):
                    z, keep = post.featurize(x, present)[m]
                    feats.append(z[keep])
                    labels.append(y[keep])
        count, mean, scatter = batch_statistics(torch.cat(feats), torch.cat(labels), 3)
        by_class = pooled(post.stats[m], post.row_class, 3)
        assert torch.equal(by_class.count, count), m
        assert torch.allclose(by_class.mean, mean, rtol=1e-5, atol=1e-6), m  # features computed in float32
        assert torch.allclose(by_class.scatter, scatter, rtol=1e-4, atol=1e-3 * float(scatter.abs().max())), m


def test_the_reuse_or_grow_decision_is_deterministic_for_a_seed(tmp_path):
    logs = []
    for attempt in range(2):
        cfg, stream, model = _domain_model(tmp_path / str(attempt), growth="evidence", reuse_accuracy=0.5)
        for i, exp in enumerate(stream.train_stream):
            train_experience(cfg, model, exp, seed=i)
        logs.append((dict(model.growth_log), dict(model.experience_group)))
    assert logs[0] == logs[1]
    assert logs[0][1][0] == 0 and len(logs[0][0]) == 3


def _accuracy(model, dataset) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, _, y in model._batches(dataset):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    model.train()
    return correct / total


def test_a_reused_group_keeps_its_earlier_experiences_within_tolerance(tmp_path):
    """Reuse lets the reused group's experts train on (at a tenth of the rate); the experience that group
    learned first may move, but by no more than 0.05 in accuracy on its test data."""
    cfg, stream, model = _domain_model(tmp_path, growth="evidence", reuse_accuracy=0.0, old_expert_lr_scale=0.1)
    train_experience(cfg, model, stream.train_stream[0], seed=0)
    before = _accuracy(model, stream.test_stream[0].dataset)
    train_experience(cfg, model, stream.train_stream[1], seed=1)
    assert model.experience_group == {0: 0, 1: 0}, model.growth_log  # reused, not grown
    trained = [p for p in model.layers[0].pool.experts_of(0)[0].parameters()]
    assert all(p.requires_grad for p in trained)  # the reused experts did train
    assert abs(_accuracy(model, stream.test_stream[0].dataset) - before) <= 0.05


def _conditional(model, dataset) -> torch.Tensor:
    """log p_stat(c | x, e) per row, over a test set."""
    model.eval()
    with torch.no_grad():
        parts = [model.statistics.experience_posterior(x, present, [0])[1] for x, present, _ in model._batches(dataset)]
    return torch.cat(parts)


def test_a_later_domain_leaves_the_earlier_conditional_frozen(tmp_path):
    """Once a class recurs (`stats_conditional: auto`), how experience 0 tells its classes apart (its
    discriminants, floor and expert weight) stays as it was when it ended, while the later domain reshapes
    the shared covariance used for routing (`current` lets the conditional move too)."""
    moved = {}
    for mode in ("auto", "current"):
        cfg, stream, model = _domain_model(tmp_path / mode, stats_conditional=mode)
        train_experience(cfg, model, stream.train_stream[0], seed=0)
        test = stream.test_stream[0].dataset
        before = _conditional(model, test)[:, :3]
        assert not model.statistics.frozen  # nothing recurs yet: nothing frozen is kept
        train_experience(cfg, model, stream.train_stream[1], seed=1)
        assert model.statistics.frozen == (mode == "auto")
        moved[mode] = float((_conditional(model, test)[:, :3] - before).abs().max())
        if mode == "auto":  # the expert weight experience 0 mixes with is the one chosen when it ended
            weights = model.statistics.column_weights([0, 1], torch.tensor([0, 0, 0, 1, 1, 1]))
            assert weights[:3].tolist() == [model.statistics.choices[0]["expert_weight"]] * 3
            x = next(iter(model._batches(test)))[0]
            with torch.no_grad():
                kept = model.forward_outputs(x).logits
                model.statistics.frozen_weight[0] = 0.0 if model.statistics.frozen_weight[0] > 0 else 1.0
                assert not torch.allclose(model.forward_outputs(x).logits, kept)  # the prediction reads it
    assert moved["auto"] < 1e-4, moved
    assert moved["current"] > 1e-2, moved
