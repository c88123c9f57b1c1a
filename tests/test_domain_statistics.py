"""Domain-incremental learning: statistics of a class that recurs accumulate across experiences, exactly as
if its data had arrived at once, and the reuse-or-grow decision is a deterministic function of the data."""

from __future__ import annotations

import pytest
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


def _domain_model(tmp_path, stream: dict = DOMAINS, **params):
    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, **params}})
    cfg["stream"] = stream
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
    """Once a class recurs (`stats_conditional: auto`, `stats_refit: never`), how experience 0 tells its
    classes apart (its discriminants, floor and expert weight) stays as it was when it ended, while the later
    domain reshapes the shared covariance used for routing (`current` lets the conditional move too)."""
    moved = {}
    for mode in ("auto", "current"):
        cfg, stream, model = _domain_model(tmp_path / mode, stats_conditional=mode, stats_refit="never")
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


def _two_domains(*later: dict | None, sizes: tuple[int, ...] = ()) -> dict:
    """Experiences of the same 3 classes: 150 samples of a synthetic source, then 90 (or `sizes`) for each
    of `later`: None, another random subset of the same distribution (drawn from 3,000, so that they share
    few samples), or a copy with those source parameters changed (e.g. {"noise": 3.0})."""
    params = {"n_classes": 3, "n_modalities": 2, "dim": 6, "n_train_per_class": 1000, "n_test_per_class": 10, "separation": 3.0}
    sources = {"first": {"kind": "synthetic", "params": params}}
    experiences = [{"source": "first", "train_size": 150}]
    for k, changed in enumerate(later):
        name = "first" if changed is None else f"changed{k}"
        sources[name] = {"kind": "synthetic", "params": {**params, **(changed or {})}}
        experiences.append({"source": name, "train_size": sizes[k] if sizes else 90})
    return {"scenario": "domain_incremental", "experiences": experiences, "sources": sources}


@pytest.mark.parametrize(("changed", "shares"), [(None, True), ({"noise": 3.0}, False)])
def test_a_later_domain_refits_the_earlier_conditional_only_on_evidence(tmp_path, changed, shares):
    """`stats_refit: evidence`: the later domain's validation split decides whether experience 0 takes the
    discriminants refitted with its data (its conditional moves) or keeps its own (it does not move, < 1e-4);
    the decision and its evidence are recorded, and they are the same on a second run with the same seed."""
    decisions = []
    for attempt in range(2):
        cfg, stream, model = _domain_model(tmp_path / str(attempt), _two_domains(changed), stats_refit="evidence")
        train_experience(cfg, model, stream.train_stream[0], seed=0)
        before = _conditional(model, stream.test_stream[0].dataset)[:, :3]
        train_experience(cfg, model, stream.train_stream[1], seed=1)
        moved = float((_conditional(model, stream.test_stream[0].dataset)[:, :3] - before).abs().max())
        choice = model.statistics.choices[1]
        assert choice["pooling/shares"] == float(shares), choice
        assert (moved > 1e-3) if shares else (moved < 1e-4), (moved, choice)
        decisions.append({k: v for k, v in choice.items() if k.startswith("pooling/")})
    assert decisions[0] == decisions[1]


def test_with_one_modality_the_floors_tie_on_the_statistics_and_the_model_decides(tmp_path):
    """One modality: the floor only flattens the statistics' posterior, so their answers are the same under
    every floor; the model's answers (through how much p(e | x) each experience keeps) are what rank them."""
    stream = domain_stream()
    for source in stream["sources"].values():
        source["params"]["n_modalities"] = 1
    cfg, stream, model = _domain_model(tmp_path, stream)
    for i, exp in enumerate(stream.train_stream[:2]):
        train_experience(cfg, model, exp, seed=i)
    post = model.statistics.posterior
    n_val = sum(len(y) for _, _, y in model._batches(stream.train_stream[0].validation))
    n_val += sum(len(y) for _, _, y in model._batches(stream.train_stream[1].validation))
    assert len(set(post.floor_correct.tolist())) == 1 and post.floor_correct[0] > 0  # a tie, with evidence
    assert 0 < float(post.floor_model_correct.max()) <= n_val
    ranked = max(post.floors, key=lambda f: (float(post.floor_model_correct[post.floors.index(f)]), -f))
    assert post.floor == ranked == model.statistics.choices[1]["floor"]


def test_a_domain_that_did_not_share_stays_out_of_later_refits(tmp_path):
    """A differently shaped (rotated) domain keeps its own discriminants when a later domain shares with the
    first one: the refit reaches experience 0 (its conditional moves) but not experience 1 (< 1e-4)."""
    cfg, stream, model = _domain_model(tmp_path, _two_domains({"domain": 1}, None), stats_refit="evidence")
    for i in range(2):
        train_experience(cfg, model, stream.train_stream[i], seed=i)
    before = [_conditional_of(model, stream.test_stream[j].dataset, j) for j in range(2)]
    train_experience(cfg, model, stream.train_stream[2], seed=2)
    choices = model.statistics.choices
    assert choices[1]["pooling/shares"] == 0.0 and choices[2]["pooling/shares"] == 1.0, choices
    moved = [float((_conditional_of(model, stream.test_stream[j].dataset, j) - before[j]).abs().max()) for j in range(2)]
    assert moved[0] > 1e-3 and moved[1] < 1e-4, moved


def _conditional_of(model, dataset, experience: int) -> torch.Tensor:
    """log p_stat(c | x, e) over a test set, for the rows of one experience."""
    rows = (model.statistics.posterior.row_experience == experience).nonzero().flatten()
    model.eval()
    with torch.no_grad():
        parts = [model.statistics.experience_posterior(x, present, [0])[1][:, rows] for x, present, _ in model._batches(dataset)]
    return torch.cat(parts)


def test_class_incremental_streams_are_never_judged(tmp_path):
    """No class recurs, so no experience is judged for pooling, even with `stats_conditional: frozen`."""
    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, "stats_conditional": "frozen"}})
    cfg["train"]["epochs"] = 1
    cfg, stream, model = build_model_and_stream(cfg)
    for i, exp in enumerate(stream.train_stream):
        train_experience(cfg, model, exp, seed=i)
    assert model.statistics.frozen and len(model.statistics.choices) == len(stream.train_stream)
    assert not any(k.startswith("pooling/") for c in model.statistics.choices.values() for k in c)


def test_the_pooling_decision_reaches_tensorboard(tmp_path):
    """The statistics' choices at each experience's end, the pooling evidence among them, are scalars
    under `statistics/` with the experience as the step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lifelong_moe import config_from_dict
    from lifelong_moe.runner import run

    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, "stats_refit": "evidence"}})
    cfg["stream"], cfg["train"]["epochs"], cfg["train"]["validation_fraction"] = _two_domains(None), 1, 0.2
    res = run(config_from_dict(cfg), progress=lambda _: None)
    acc = EventAccumulator(str(res.run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    shares = acc.Scalars("statistics/pooling/shares")
    assert [e.step for e in shares] == [1] and shares[0].value == 1.0
    assert [e.step for e in acc.Scalars("statistics/floor")] == [0, 1]


def test_a_refit_reaches_only_the_earlier_experiences_with_the_same_modalities(tmp_path):
    """The same distribution, first with modality m0 alone, then with m0 and m1: the pair shares (pooling
    describes it), but its evidence comes from samples that carry both modalities, so the m0-only
    experience keeps its conditional bit for bit; with m0 and m1 in both experiences the same data move it."""
    moved = {}
    for alone in (True, False):
        stream = _two_domains(None)
        stream["experiences"][0]["modalities"] = ["m0"] if alone else ["m0", "m1"]
        stream["experiences"][1]["modalities"] = ["m0", "m1"]
        if alone:
            stream["scenario"] = "modality_incremental"
        cfg, stream, model = _domain_model(tmp_path / str(alone), stream, stats_refit="evidence")
        train_experience(cfg, model, stream.train_stream[0], seed=0)
        assert model.statistics.posterior.modalities_of(0) == ({"m0"} if alone else {"m0", "m1"})
        before = _conditional_of(model, stream.test_stream[0].dataset, 0)
        train_experience(cfg, model, stream.train_stream[1], seed=1)
        assert model.statistics.choices[1]["pooling/shares"] == 1.0, model.statistics.choices[1]
        moved[alone] = float((_conditional_of(model, stream.test_stream[0].dataset, 0) - before).abs().max())
    assert moved[True] == 0.0 and moved[False] > 1e-3, moved
