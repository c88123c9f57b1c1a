"""The floor of p(e | x), once conditionals are frozen, is its own setting (`ClassPosterior.experience_floor`):
it falls back to the conditionals' floor until scored, is scored by the model from the second experience on
(ties to the smallest), sets how much of a sample a later experience can take (and nothing else), and a
checkpoint saved before it existed still loads."""

from __future__ import annotations

import torch
from test_domain_statistics import _domain_model
from test_pooling_evidence import BASE, CLASSES, Identity, draw

from conftest import build_model_and_stream, tiny_config, train_experience
from lifelong_moe.moe.class_posterior import ClassPosterior


def two_domains(floors: tuple[float, ...] = (0.0, 0.3)) -> ClassPosterior:
    """The same 3 classes in two experiences, the second shifted far from the first, fitted and frozen."""
    g = torch.Generator().manual_seed(0)
    post = ClassPosterior("lda", shrinkages=(0.1,), floors=floors)
    post.add_modality("x", Identity())
    ones = lambda n: torch.ones(n, dtype=torch.bool)  # noqa: E731
    x0, y0 = draw(200, BASE, g)
    post.add_rows(0, range(CLASSES))
    post.observe({"x": (x0, ones(len(y0)))}, post.row_of(0, y0))
    post.fit(None)
    post.start_freezing()
    x1, y1 = draw(200, BASE, g)
    post.add_rows(1, range(CLASSES))
    post.observe({"x": (x1 + 40.0, ones(len(y1)))}, post.row_of(1, y1))
    post.fit(None)
    post.freeze_rows(1)
    return post


def share_of_later(post: ClassPosterior, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p(e = 1 | x) (B,), log p(c | x, e) (B, R)) for samples x."""
    present = {"x": torch.ones(len(x), dtype=torch.bool)}
    rows, conditional = post.frozen_conditional({"x": x}, present)
    return rows[:, post.row_experience == 1].logsumexp(1).exp(), conditional


def test_the_floor_of_p_e_given_x_sets_the_share_a_later_experience_takes_and_nothing_else():
    post = two_domains()
    post.floor_correct[1] = 1.0  # the conditionals' floor: 0.3
    x, _ = draw(20, BASE, torch.Generator().manual_seed(5))  # samples of the first experience
    assert post.floor == 0.3 and post.experience_floor == 0.3  # not scored yet: the conditionals' floor
    shared, conditional = share_of_later(post, x)
    # one modality, 6 rows: a floor f gives the later experience's 3 rows at least f * 3/6 of every sample
    assert float(shared.min()) >= 0.3 * 0.5 - 1e-6
    post.experience_floor_correct += torch.tensor([5.0, 5.0])  # a tie: the smallest
    assert post.experience_floor == 0.0 and post.floor == 0.3
    alone, unchanged = share_of_later(post, x)
    assert float(alone.max()) < 1e-6  # far from the later experience's means, nothing left for it
    assert torch.equal(conditional, unchanged)  # the conditionals keep the floor they were frozen with
    post.experience_floor_correct[1] += 1.0
    assert post.experience_floor == 0.3


def test_a_checkpoint_saved_before_the_experience_floor_existed_loads_and_reads_the_floor():
    post = two_domains()
    post.floor_correct[1] = 1.0
    state = {k: v for k, v in post.state_dict().items() if k != "experience_floor_correct"}
    fresh = ClassPosterior("lda", shrinkages=(0.1,), floors=(0.0, 0.3))
    fresh.add_modality("x", Identity())
    fresh.load_state_dict(state)
    assert fresh.experience_floor == fresh.floor == 0.3
    assert not bool(fresh.experience_floor_correct.any())
    x, _ = draw(5, BASE, torch.Generator().manual_seed(6))
    assert torch.equal(share_of_later(fresh, x)[0], share_of_later(post, x)[0])


def test_the_model_scores_the_floor_of_p_e_given_x_from_the_second_experience_on(tmp_path):
    cfg, stream, model = _domain_model(tmp_path)
    post = model.statistics.posterior
    seen: list[float] = []  # the floor of p(e | x) in use at every pass of the model
    forward = model.forward_outputs
    model.forward_outputs = lambda *a, **k: (seen.append(post.experience_floor), forward(*a, **k))[1]
    n_val = []
    for i, exp in enumerate(stream.train_stream):
        seen.clear()
        train_experience(cfg, model, exp, seed=i)
        if i > 0:  # every candidate reaches the model while it is scored
            assert set(post.floors) <= set(seen), (post.floors, set(seen))
        n_val.append(sum(len(y) for _, _, y in model._batches(exp.validation)))
        counts = post.experience_floor_correct
        if i == 0:
            assert not bool(counts.any()) and "experience_floor" not in model.statistics.choices[0]
            continue
        assert 0 < float(counts.max()) <= sum(n_val[1:])  # each candidate at most once per sample
        ranked = max(post.floors, key=lambda f: (float(counts[post.floors.index(f)]), -f))
        assert model.statistics.choices[i]["experience_floor"] == ranked == post.experience_floor
    assert post.floor_override is None and post.experience_floor_override is None  # scoring left nothing set


def test_class_incremental_never_scores_it(tmp_path):
    """Without a recurring class nothing is frozen, and p(e | x) keeps the one floor."""
    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32}})
    cfg["train"]["epochs"] = 1
    cfg, stream, model = build_model_and_stream(cfg)
    for i, exp in enumerate(stream.train_stream):
        train_experience(cfg, model, exp, seed=i)
    assert not model.statistics.frozen
    assert not bool(model.statistics.posterior.experience_floor_correct.any())
    assert all("experience_floor" not in c for c in model.statistics.choices.values())
