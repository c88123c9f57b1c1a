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


def test_group_features_join_every_depth_of_each_group(tmp_path):
    """Each group's nested features are its pooled tokens after the encoders and after each MoE layer (each
    layer-normed), then the group's own representation, the one its head reads; groups differ."""
    import torch.nn.functional as F

    from conftest import build_model_and_stream, train_experience
    from lifelong_moe.models.moe_routing import token_layout
    from lifelong_moe.moe.groups import GroupRoute

    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 8, "expert_hidden": 16, "n_layers": 2,
                                                                 "gate": "nested", "encoder_training": "per_group"}})
    cfg["train"]["epochs"] = 1
    cfg, stream, model = build_model_and_stream(cfg)
    for i, exp in enumerate(stream.train_stream[:2]):
        train_experience(cfg, model, exp, seed=i)
    model.eval()
    x, _, _ = torch.utils.data.default_collate([stream.test_stream[0].dataset[i] for i in range(10)])
    with torch.no_grad():
        tokens, present = model.modality_tokens(x)
        feats = model.group_features(x, tokens, present)
        assert [f.shape for f in feats] == [(10, 8 * 3)] * 2 and model.nested.dim == 8 * 3
        for g, f in enumerate(feats):
            group = torch.full((10,), g)
            t = token_layout(model.group_encoders.encode(x, tokens, group, model.modality_embed), present)
            w = t.present.float().unsqueeze(1)
            h, expected = t.h, []
            for layer in model.layers:
                mean = torch.zeros(10, 8).index_add_(0, t.sample, h * w) / t.presence.sum(1, keepdim=True)
                expected.append(F.layer_norm(mean, (8,)))
                h = layer(h, route=GroupRoute(single=g), token_weight=w.squeeze(1)).hidden
            expected.append(model._experts(x, tokens, present, group, single=g)[0])  # what g's head reads
            torch.testing.assert_close(f, torch.cat(expected, 1), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(feats[0], feats[1])
