"""Domain-incremental learning: statistics of a class that recurs accumulate across experiences, exactly as
if its data had arrived at once; `conditional: frozen` keeps how an earlier experience tells its classes
apart as it was when it ended (`current` lets later domains move it); growth decisions are deterministic."""

from __future__ import annotations

import torch
from test_class_statistics import batch_statistics

from conftest import build_model_and_stream, tiny_config, train_experience


def domain_stream(dim: int = 6, n_train: int = 30, n_test: int = 10) -> dict:
    """Three synthetic domains of the same 3 classes, one per experience."""
    params = {"n_classes": 3, "n_modalities": 2, "dim": dim, "n_train_per_class": n_train, "n_test_per_class": n_test, "separation": 3.0}
    return {"scenario": "domain_incremental", "experiences": [{"source": f"d{k}"} for k in range(3)],
            "sources": {f"d{k}": {"kind": "synthetic", "params": {**params, "domain": k}} for k in range(3)}}


DOMAINS = domain_stream()


def _domain_model(tmp_path, stream: dict = DOMAINS, **params):
    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, **params}})
    cfg["stream"] = stream
    cfg["train"]["epochs"] = 1
    return build_model_and_stream(cfg)


def _by_class(stats, row_class: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What one row per class would hold had all its rows' samples arrived together (Chan's merge)."""
    count = torch.zeros(n_classes, dtype=torch.float64).index_add_(0, row_class, stats.count)
    mean = torch.zeros(n_classes, stats.dim, dtype=torch.float64).index_add_(0, row_class, stats.mean * stats.count[:, None])
    mean /= count.clamp_min(1.0)[:, None]
    spread = (stats.mean - mean[row_class]) * stats.seen[:, None]
    return count, mean, stats.scatter + (spread * stats.count[:, None]).T @ spread


def test_a_recurring_class_accumulates_statistics_over_experiences(tmp_path):
    cfg, stream, model = _domain_model(tmp_path)
    for i, exp in enumerate(stream.train_stream):
        train_experience(cfg, model, exp, seed=i)
    stats = model.statistics
    assert stats.row_class.tolist() == [0, 1, 2] * 3 and stats.row_experience.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    for m in stats.views:
        feats, labels = [], []
        for exp in stream.train_stream:  # every sample each experience added: its training and validation data
            for dataset in (exp.dataset, exp.validation):
                for x, present, y in model.batches(dataset):
                    z, keep = stats.featurize(x, present)[m]
                    feats.append(z[keep])
                    labels.append(y[keep])
        count, mean, scatter = batch_statistics(torch.cat(feats), torch.cat(labels), 3)
        got = _by_class(stats.stats[m], stats.row_class, 3)
        assert torch.equal(got[0], count), m
        assert torch.allclose(got[1], mean, rtol=1e-5, atol=1e-6), m  # features computed in float32
        assert torch.allclose(got[2], scatter, rtol=1e-4, atol=1e-3 * float(scatter.abs().max())), m


def test_the_reuse_decision_is_deterministic_for_a_seed(tmp_path):
    """`growth: modality` brings no new group for a new domain: each reuses the group the gate sends most of
    its data to, the same on a second run."""
    logs = []
    for attempt in range(2):
        cfg, stream, model = _domain_model(tmp_path / str(attempt), growth="modality")
        for i, exp in enumerate(stream.train_stream):
            train_experience(cfg, model, exp, seed=i)
        logs.append((dict(model.growth_log), dict(model.experience_group)))
    assert logs[0] == logs[1]
    assert logs[0][1] == {0: 0, 1: 0, 2: 0} and "reusing group 0" in logs[0][0][2]


def _conditional(model, dataset, experience: int) -> torch.Tensor:
    """log p_stat(c | x, e) over a test set, for the rows of one experience."""
    rows = (model.statistics.row_experience == experience).nonzero().flatten()
    model.eval()
    with torch.no_grad():
        parts = [model.statistics.conditional_log_posterior(model.statistics.featurize(x, present))[:, rows]
                 for x, present, _ in model.batches(dataset)]
    model.train()
    return torch.cat(parts)


def test_frozen_keeps_the_earlier_conditional_and_its_weight_and_current_lets_it_move(tmp_path):
    """With `conditional: frozen`, how experience 0 tells its classes apart (its discriminants, floor and
    expert weight) stays as it was when it ended, while the later domain reshapes the shared covariance
    that routing uses; with `current` the later domain moves experience 0's conditional too."""
    moved = {}
    for mode in ("frozen", "current"):
        cfg, stream, model = _domain_model(tmp_path / mode, statistics={"conditional": mode})
        train_experience(cfg, model, stream.train_stream[0], seed=0)
        test = stream.test_stream[0].dataset
        before = _conditional(model, test, 0)
        train_experience(cfg, model, stream.train_stream[1], seed=1)
        moved[mode] = float((_conditional(model, test, 0) - before).abs().max())
        if mode == "frozen":  # the expert weight experience 0 mixes with is the one chosen when it ended
            assert float(model.frozen_weight[0]) == model.choices[0]["expert_weight"]
            x = next(iter(model.batches(test)))[0]
            with torch.no_grad():
                kept = model.forward_outputs(x).logits
                model.frozen_weight[0] = 0.0 if model.frozen_weight[0] > 0 else 1.0
                assert not torch.allclose(model.forward_outputs(x).logits, kept)  # the prediction reads it
    assert moved["frozen"] < 1e-4, moved
    assert moved["current"] > 1e-2, moved


def test_the_statistics_choices_reach_tensorboard(tmp_path):
    """The statistics' choices and the expert weight at each experience's end are scalars under
    `statistics/`, and each part's ACC under `contributions/`, with the experience as the step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lifelong_moe import config_from_dict
    from lifelong_moe.runner import run

    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32}})
    cfg["stream"], cfg["train"]["epochs"] = DOMAINS, 1
    res = run(config_from_dict(cfg), progress=lambda _: None)
    acc = EventAccumulator(str(res.run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("statistics/floor")] == [0, 1, 2]
    assert [e.step for e in acc.Scalars("statistics/expert_weight")] == [0, 1, 2]
    for part in ("statistics", "experts", "model"):
        values = [e.value for e in acc.Scalars(f"contributions/{part}/acc")]
        assert len(values) == 3 and abs(values[-1] - res.results["contributions"][part]["acc"]) < 1e-6
