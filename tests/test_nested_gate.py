"""`gate: nested`: class statistics in each group's own learned features. They are exact (a row's statistics
in the space of groups 0..s are those of its samples), a row has none in groups that came after its
experience, the nested posterior is a distribution over the rows it can judge, and it tells classes apart
where only learned features can."""

from __future__ import annotations

import torch
from test_class_statistics import batch_statistics

from conftest import tiny_config
from lifelong_moe import config_from_dict, run
from lifelong_moe.statistics.nested import NestedStatistics

D = 3


def _features(y: torch.Tensor, stages: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Group s's features: noise, except that group s lights up dimension c % D for the classes it learned
    (stage(c) = c // 2), so only the group of a class knows it."""
    out = []
    for s in range(stages):
        f = torch.randn(len(y), D, generator=gen) * 0.3
        mine = (y // 2) == s
        f[mine, 0] += 3.0 * (y[mine] % 2 * 2 - 1)  # its two classes apart
        f[mine, 1] += 3.0  # and apart from every other class
        out.append(f)
    return out


def _trained(stages: int = 3, per_class: int = 40, seed: int = 0) -> tuple[NestedStatistics, torch.Generator]:
    gen = torch.Generator().manual_seed(seed)
    nested = NestedStatistics(D, shrinkages=[0.1])
    for s in range(stages):  # experience s: classes 2s, 2s+1; its samples pass through groups 0..s
        nested.add_stage()
        nested.add_rows(s, 2)
        y = torch.arange(2 * s, 2 * s + 2).repeat_interleave(per_class)
        nested.observe(_features(y, s + 1, gen), y)
        nested.fit(None)
    return nested, gen


def test_statistics_are_exact_and_absent_after_a_rows_experience():
    gen = torch.Generator().manual_seed(1)
    nested = NestedStatistics(D, shrinkages=[0.1])
    feats_all, labels = [], []
    for s in range(3):
        nested.add_stage()
        nested.add_rows(s, 2)
        y = torch.arange(2 * s, 2 * s + 2).repeat_interleave(25)
        feats = _features(y, s + 1, gen)
        for chunk in torch.arange(len(y)).split(17):  # streamed in pieces
            nested.observe([f[chunk] for f in feats], y[chunk])
        feats_all.append(feats)
        labels.append(y)
    for s, stage in enumerate(nested.stages):
        z = torch.cat([torch.cat(f[: s + 1], 1) for f in feats_all[s:]])
        y = torch.cat(labels[s:])
        count, mean, scatter = batch_statistics(z, y, 6)
        assert torch.equal(stage.stats.count, count)
        assert torch.allclose(stage.stats.mean, mean, atol=1e-6) and torch.allclose(stage.stats.scatter, scatter, atol=1e-5)
        assert not stage.stats.seen[: 2 * s].any()  # earlier experiences' rows: no statistics in a later group


def test_the_nested_posterior_is_a_distribution_and_tells_classes_apart():
    nested, gen = _trained()
    y = torch.arange(6).repeat_interleave(30)
    logp = nested.log_posterior(_features(y, 3, gen))
    assert torch.allclose(torch.logsumexp(logp, 1), torch.zeros(len(y)), atol=1e-4)
    assert (logp.argmax(1) == y).float().mean() > 0.95


def test_validation_chooses_among_the_shrinkages():
    nested, gen = _trained()
    nested.shrinkages = (0.999, 0.1)
    nested.shrinkage_correct = torch.zeros(2, dtype=torch.float64)
    y = torch.arange(4, 6).repeat_interleave(20)
    chosen = nested.fit((_features(y, 3, gen), y, torch.arange(6)))
    assert nested.shrinkage_correct[1] >= nested.shrinkage_correct[0] and chosen == {"nested_shrinkage": nested.shrinkage}


def test_the_moe_reports_its_fixed_statistics_as_the_stats_model_would(tmp_path):
    """With the nested gate, `fixed_statistics` is exactly the `stats` model's answer on the same stream and
    seed; the gate's statistics part differs from it (it reads the groups' features too)."""
    stream = {"scenario": "class_incremental", "split": {"source": "s", "n_experiences": 3}, "sources": {"s": {
        "kind": "synthetic", "params": {"n_classes": 6, "n_modalities": 2, "dim": 8, "n_train_per_class": 60,
                                        "n_test_per_class": 30, "separation": 1.5, "noise": 1.0}}}}
    moe = tiny_config(tmp_path / "moe", stream=stream, model={"name": "moe", "params": {
        "embed_dim": 16, "expert_hidden": 32, "gate": "nested", "encoder_training": "per_group"}})
    moe_results = run(config_from_dict(moe), progress=lambda s: None).results
    stats = run(config_from_dict(tiny_config(tmp_path / "stats", stream=stream, model={"name": "stats"})), progress=lambda s: None).results
    parts = moe_results["contributions"]
    assert sorted(parts) == ["experts", "fixed_statistics", "model", "statistics"]
    assert parts["fixed_statistics"]["accuracy_matrix"] == stats["accuracy_matrix"]
    assert parts["statistics"]["accuracy_matrix"] != stats["accuracy_matrix"]
    assert moe_results["parameters_per_experience"][-1]["stored_bytes"] > stats["parameters_per_experience"][-1]["stored_bytes"]
