"""The MoE LightningModule: growth, the freeze guarantee, task-free routing, accounting, DDP."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from conftest import build_model_and_stream, tiny_config, train_experience
from lifelong_moe import config_from_dict, run
from lifelong_moe.training import fit_experience, train_loader

SEPARABLE = {
    "kind": "synthetic",
    "params": {"n_classes": 6, "n_modalities": 2, "dim": 8, "n_train_per_class": 60, "n_test_per_class": 30, "separation": 4.0, "noise": 0.7},
}


def moe_config(root, stream=None, **params):
    cfg = tiny_config(root, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, **params}})
    if stream is not None:
        cfg["stream"] = stream
    return cfg


def test_experts_grow_per_experience_and_active_parameters_stay_flat(tmp_path):
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 3}}
    res = run(config_from_dict(moe_config(tmp_path, stream, experts_per_growth=3, k=2, n_layers=2)), progress=lambda s: None)
    per_exp = res.results["parameters_per_experience"]
    assert [p["routed_experts_per_layer"] for p in per_exp] == [3, 6, 9]
    assert [p["group"] for p in per_exp] == [0, 1, 2]
    totals = [p["total"] for p in per_exp]
    active = [p["active_per_sample"] for p in per_exp]
    assert totals[2] > 2 * totals[0] * 0.9  # capacity grows with the stream ...
    assert active[2] < 1.1 * active[0]  # ... while the work per sample stays flat (heads grow slightly)
    # after the first experience only the new experts, router columns and head train
    assert per_exp[1]["trainable"] < per_exp[0]["trainable"]


def test_modality_policy_grows_only_for_new_modalities_and_cap_reuses(tmp_path):
    stream = {
        "scenario": "modality_incremental",
        "sources": {"s": SEPARABLE},
        "experiences": [
            {"source": "s", "classes": [0, 1], "modalities": ["m0"]},
            {"source": "s", "classes": [2, 3], "modalities": ["m0"]},
            {"source": "s", "classes": [4, 5], "modalities": ["m1"]},
        ],
    }
    cfg, s, model = build_model_and_stream(moe_config(tmp_path, stream, growth="modality", experts_per_growth=2))
    for exp in s.train_stream:
        train_experience(cfg, model, exp)
    assert model.experience_group == {0: 0, 1: 0, 2: 1}
    assert len(model.layers[0].pool) == 4

    cfg, s, model = build_model_and_stream(moe_config(tmp_path, stream, growth="experience", experts_per_growth=2, max_experts=4))
    for exp in s.train_stream:
        train_experience(cfg, model, exp)
    assert len(model.layers[0].pool) == 4 and model.n_groups == 2
    assert "cap of 4 experts reached" in model.growth_log[2]


def test_old_experts_are_bit_identical_after_a_new_experience(tmp_path):
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 2}}
    cfg, s, model = build_model_and_stream(moe_config(tmp_path, stream, communication="shared", shared={"n": 1, "anchor": 0.0, "drift_bound": 0.0}))
    train_experience(cfg, model, s.train_stream[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}

    model.on_experience_start(s.train_stream[1])
    new_expert = model.layers[0].pool.experts[2].fc1.weight.detach().clone()
    trainer = fit_experience(model, s.train_stream[1].dataset, cfg.train, cfg.trainer, seed=1, logger=False)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    model.on_experience_end(s.train_stream[1])
    after = model.state_dict()

    # every parameter of experience 0 (encoders, experts, router columns, norms, head), the shared expert held
    # in place by a drift bound of 0, and the fixed feature spaces of the class statistics; the statistics
    # themselves accumulate (below), and so do the counts that choose w
    accumulating = [k for k in before if k.startswith("statistics.") and ".views." not in k]
    old_keys = [k for k in before if k not in ("seen_classes", "task_classes", "weight_correct", *accumulating)]
    assert any(".views." in k for k in old_keys)
    assert any(".pool.experts.0." in k for k in old_keys) and any("router.columns.0" in k for k in old_keys)
    assert any(".pool.shared.0." in k for k in old_keys)
    changed = [k for k in old_keys if not torch.equal(before[k], after[k])]
    assert changed == [], f"frozen parameters changed: {changed}"
    for m in ("m0", "m1"):  # experience 0's class statistics (its rows) are untouched by experience 1's data
        for what in ("count", "mean"):
            key = f"statistics.stats.{m}.{what}"
            assert torch.equal(after[key][: len(before[key])], before[key])
    # the new experience did train its own experts, and no frozen parameter had optimizer state
    assert not torch.equal(new_expert, model.layers[0].pool.experts[2].fc1.weight.detach())
    old_params = [p for n, p in model.named_parameters() if n in before and ".shared." not in n]
    assert not any(id(p) in optimized for p in old_params)
    assert all(not p.requires_grad for p in old_params)


def test_a_copy_of_the_model_freezes_the_same_parameters(tmp_path):
    """`copy.deepcopy` of a model after an experience (a snapshot a user keeps training) freezes the same
    experience-0 parameters at the next experience as the model itself (it froze none: it kept object ids)."""
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 2}}
    cfg, s, model = build_model_and_stream(moe_config(tmp_path, stream))
    train_experience(cfg, model, s.train_stream[0])
    clone = copy.deepcopy(model)
    for m in (model, clone):
        m.on_experience_start(s.train_stream[1])
    frozen = {m: {n for n, p in m.named_parameters() if not p.requires_grad} for m in (model, clone)}
    assert frozen[model] == frozen[clone] and any(".pool.experts.0." in n for n in frozen[clone])


def test_a_reused_group_stays_frozen_and_only_the_new_head_learns(tmp_path):
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 2}}
    # no new modality: the modality policy reuses group 0 for experience 1
    cfg, s, model = build_model_and_stream(moe_config(tmp_path, stream, growth="modality"))
    train_experience(cfg, model, s.train_stream[0])
    w0 = model.layers[0].pool.experts[0].fc1.weight.detach().clone()
    model.on_experience_start(s.train_stream[1])
    assert model.experience_group[1] == 0 and "reusing group 0" in model.growth_log[1]
    fit_experience(model, s.train_stream[1].dataset, cfg.train, cfg.trainer, seed=1, logger=False)
    assert torch.equal(w0, model.layers[0].pool.experts[0].fc1.weight.detach())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"heads.1.linear.weight", "heads.1.linear.bias"}


def test_task_free_routing_is_accurate_per_sample_on_separable_stream(tmp_path):
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 3}}
    res = run(config_from_dict(moe_config(tmp_path, stream)), progress=lambda s: None)
    routing = res.results["evaluations"][-1]["routing_accuracy"]
    assert min(routing) >= 0.9, routing
    assert res.metrics["acc"] > 0.8  # class-incremental, no task labels, no replay
    mass = torch.tensor(res.results["evaluations"][-1]["routing_mass"])  # (J, M, E)
    assert mass.shape == (3, 2, 6)


def trained_on_two(tmp_path, per_experience: int):
    """A model trained on two experiences of SEPARABLE (eval mode), and a test batch mixing both experiences."""
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 2}}
    cfg, s, model = build_model_and_stream(moe_config(tmp_path, stream))
    for exp in s.train_stream:
        train_experience(cfg, model, exp)
    model.eval()
    x, _, _ = torch.utils.data.default_collate([s.test_stream[j].dataset[i] for j in (0, 1) for i in range(per_experience)])
    return model, x


def test_mixed_batch_routes_each_sample_to_its_own_experience(tmp_path):
    model, x = trained_on_two(tmp_path, 10)
    with torch.no_grad():
        out = model.forward_outputs(x)
    owner = torch.as_tensor(model.expert_owner)
    group = owner[out.routings[0].topk_idx[:, 0]]  # each token's experts belong to its sample's routed group
    sample_group = torch.zeros(20, dtype=torch.long).index_put_((out.token_sample,), group)
    assert (sample_group[:10] == 0).float().mean() >= 0.9 and (sample_group[10:] == 1).float().mean() >= 0.9
    for routing in out.routings:  # every slot of a token is an expert of one group
        assert (owner[routing.topk_idx] == owner[routing.topk_idx[:, :1]]).all()


def test_task_incremental_routes_to_the_task_experts(tmp_path):
    stream = {"scenario": "task_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 3}}
    res = run(config_from_dict(moe_config(tmp_path, stream, statistics={"width": 1})), progress=lambda s: None)  # useless statistics
    assert res.results["evaluations"][-1]["routing_accuracy"] == [1.0, 1.0, 1.0]


def test_training_step_under_ddp_with_unused_parameters(tmp_path):
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 2}}
    cfg, s, model = build_model_and_stream(moe_config(tmp_path, stream, experts_per_growth=4, k=1))
    train_experience(cfg, model, s.train_stream[0])
    model.on_experience_start(s.train_stream[1])
    frozen = copy.deepcopy(model.layers[0].pool.experts[0].state_dict())
    new_before = [model.layers[0].pool.experts[i].fc1.weight.detach().clone() for i in range(4, 8)]
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=DDPStrategy(find_unused_parameters=True, start_method="fork", process_group_backend="gloo"),
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, train_loader(s.train_stream[1].dataset, cfg.train, 0))
    # weights come back from the spawned ranks: frozen ones did not move, the new group's did
    assert all(torch.equal(v, model.layers[0].pool.experts[0].state_dict()[k]) for k, v in frozen.items())
    new_after = [model.layers[0].pool.experts[i].fc1.weight.detach() for i in range(4, 8)]
    assert any(not torch.equal(w, b) for w, b in zip(new_after, new_before))


def test_same_seed_gives_same_matrix_and_routing(tmp_path):
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 2}}
    a = run(config_from_dict(moe_config(tmp_path, stream)), progress=lambda s: None)
    b = run(config_from_dict(moe_config(tmp_path, stream)), progress=lambda s: None)
    assert a.accuracy_matrix.tolist() == b.accuracy_matrix.tolist()
    assert a.results["evaluations"] == b.results["evaluations"]


def test_contributions_report_each_part_and_the_statistics_part_is_the_stats_model(tmp_path):
    """results.json holds the accuracy matrix, ACC and BWT of each part alone: the statistics part is exactly
    what `model.name: stats` predicts on the same stream and seed (the same feature maps, data and
    validated choices), and with w fixed at 0 the whole model is exactly its statistics part."""
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 3}}
    moe = run(config_from_dict(moe_config(tmp_path / "moe", stream)), progress=lambda s: None).results
    stats = run(config_from_dict(tiny_config(tmp_path / "stats", stream=stream, model={"name": "stats"})), progress=lambda s: None).results
    assert sorted(moe["contributions"]) == ["experts", "model", "statistics"]
    assert moe["contributions"]["statistics"]["accuracy_matrix"] == stats["accuracy_matrix"]
    assert moe["contributions"]["model"]["accuracy_matrix"] == moe["accuracy_matrix"]
    assert moe["contributions"]["model"]["acc"] == pytest.approx(moe["metrics"]["acc"])
    experts = moe["contributions"]["experts"]["accuracy_matrix"]
    assert all(experts[i][j] == 0.0 for i in range(3) for j in range(i + 1, 3))  # no head yet for a later experience
    assert "contributions" not in stats  # a model without parts has nothing to split

    only_statistics = run(config_from_dict(moe_config(tmp_path / "w0", stream, expert_weights=[0.0])), progress=lambda s: None).results
    assert only_statistics["accuracy_matrix"] == only_statistics["contributions"]["statistics"]["accuracy_matrix"]


def test_stats_model_trains_nothing_and_stores_no_sample(tmp_path):
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 3}}
    res = run(config_from_dict(tiny_config(tmp_path, stream=stream, model={"name": "stats"})), progress=lambda s: None)
    per_exp = res.results["parameters_per_experience"]
    assert [p["trainable"] for p in per_exp] == [0, 0, 0]
    assert res.metrics["acc"] > 0.8 and res.metrics["bwt"] > -0.05
    assert res.results["memory_bytes"] == per_exp[-1]["stored_bytes"] > 0
    chosen = res.results["evaluations"][-1]["statistics"]["chosen_per_experience"]
    assert set(chosen) == {0, 1, 2} and all("floor" in c and "shrinkage/m0" in c for c in chosen.values())


def test_the_experts_part_is_the_routed_heads_answer_and_the_statistics_part_is_w_zero(tmp_path):
    model, x = trained_on_two(tmp_path, 15)
    with torch.no_grad():
        out = model.forward_outputs(x)
        pooled_scores = {e: model.heads[str(e)] for e in (0, 1)}
        routed_group = torch.as_tensor(model.expert_owner)[out.routings[0].topk_idx[:, 0]]
        sample_group = torch.zeros(30, dtype=torch.long).index_put_((out.token_sample,), routed_group)
        assert torch.equal(out.logits, model.forward_outputs(x, expert_weight=model.expert_weight).logits)
        assert torch.equal(out.parts["statistics"], model.forward_outputs(x, expert_weight=0.0).logits)
    answers = out.parts["experts"].argmax(1)
    for b in range(30):  # the experts' answer is always one of the routed experience's own classes
        assert int(answers[b]) in pooled_scores[int(sample_group[b])].classes.tolist()


def test_moe_trains_and_evaluates_under_bf16_mixed_precision(tmp_path):
    """Autocast makes the heads' scores bfloat16 while the model's score table stays float32 (it crashed)."""
    cfg = tiny_config(tmp_path, model={"name": "moe"})
    cfg["trainer"]["precision"] = "bf16-mixed"
    cfg["train"]["epochs"] = 2
    result = run(config_from_dict(cfg), progress=lambda _: None)
    assert result.metrics["acc"] >= 0.9  # the tiny stream is separable: 1.0 in float32
