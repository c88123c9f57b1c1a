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
    cfg, s, model = build_model_and_stream(moe_config(tmp_path, stream, n_shared_experts=1))
    train_experience(cfg, model, s.train_stream[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}

    model.on_experience_start(s.train_stream[1])
    new_expert = model.layers[0].pool.experts[2].fc1.weight.detach().clone()
    trainer = fit_experience(model, s.train_stream[1].dataset, cfg.train, cfg.trainer, seed=1, logger=False)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    model.on_experience_end(s.train_stream[1])
    after = model.state_dict()

    # every parameter of experience 0 (encoders, experts, shared expert, router columns, norms, head), its keys
    # and the fixed feature spaces of the class statistics; the statistics themselves accumulate (below)
    accumulating = [k for k in before if k.startswith("statistics.") and ".views." not in k]
    old_keys = [k for k in before if k not in ("seen_classes", "task_classes", *accumulating)]
    assert any(".views." in k for k in old_keys)
    assert any(".pool.experts.0." in k for k in old_keys) and any("router.columns.0" in k for k in old_keys)
    assert any(k.startswith("keys.e0__") for k in old_keys) and any(".pool.shared.0." in k for k in old_keys)
    changed = [k for k in old_keys if not torch.equal(before[k], after[k])]
    assert changed == [], f"frozen parameters changed: {changed}"
    for m in ("m0", "m1"):  # experience 0's class statistics (its rows) are untouched by experience 1's data
        for what in ("count", "mean"):
            key = f"statistics.posterior.stats.{m}.{what}"
            assert torch.equal(after[key][: len(before[key])], before[key])
    # the new experience did train its own experts, and no frozen parameter had optimizer state
    assert not torch.equal(new_expert, model.layers[0].pool.experts[2].fc1.weight.detach())
    old_params = [p for n, p in model.named_parameters() if n in before]
    assert not any(id(p) in optimized for p in old_params)
    assert all(not p.requires_grad for p in old_params)


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_reused_group_trains_at_a_lower_rate_only_when_allowed(tmp_path, scale):
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 2}}
    # no new modality: the modality policy reuses group 0 for experience 1
    cfg, s, model = build_model_and_stream(moe_config(tmp_path, stream, growth="modality", old_expert_lr_scale=scale))
    train_experience(cfg, model, s.train_stream[0])
    w0 = model.layers[0].pool.experts[0].fc1.weight.detach().clone()
    model.on_experience_start(s.train_stream[1])
    assert model.experience_group[1] == 0
    groups = model.optimizer_param_groups()
    fit_experience(model, s.train_stream[1].dataset, cfg.train, cfg.trainer, seed=1, logger=False)
    moved = not torch.equal(w0, model.layers[0].pool.experts[0].fc1.weight.detach())
    if scale:
        assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(cfg.train.lr * scale) and moved
    else:
        assert len(groups) == 1 and not moved  # the default: reused experts stay frozen, only the new head learns


def test_task_free_routing_is_accurate_per_sample_on_separable_stream(tmp_path):
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 3}}
    res = run(config_from_dict(moe_config(tmp_path, stream)), progress=lambda s: None)
    routing = res.results["evaluations"][-1]["routing_accuracy"]
    assert min(routing) >= 0.9, routing
    assert res.metrics["acc"] > 0.8  # class-incremental, no task labels, no replay
    mass = torch.tensor(res.results["evaluations"][-1]["routing_mass"])  # (J, M, E)
    assert mass.shape == (3, 2, 6)


@pytest.mark.parametrize("routing", ["statistics", "keys"])
def test_mixed_batch_routes_each_sample_to_its_own_experience(tmp_path, routing):
    stream = {"scenario": "class_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 2}}
    cfg, s, model = build_model_and_stream(moe_config(tmp_path, stream, task_routing=routing))
    for exp in s.train_stream:
        train_experience(cfg, model, exp)
    model.eval()
    batch = torch.utils.data.default_collate([s.test_stream[0].dataset[i] for i in range(10)] + [s.test_stream[1].dataset[i] for i in range(10)])
    x, _y, _t = batch
    with torch.no_grad():
        tokens, present = model.modality_tokens(x)
        chosen = model.experience_log_posterior(x, tokens, present, None, None).routing.argmax(1)
    assert (chosen[:10] == 0).float().mean() >= 0.9 and (chosen[10:] == 1).float().mean() >= 0.9


def test_task_incremental_routes_to_the_task_experts(tmp_path):
    stream = {"scenario": "task_incremental", "sources": {"s": SEPARABLE}, "split": {"source": "s", "n_experiences": 3}}
    res = run(config_from_dict(moe_config(tmp_path, stream, key_var_floor=50.0)), progress=lambda s: None)  # useless keys
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
    a = run(config_from_dict(moe_config(tmp_path, stream, gate_noise=0.5)), progress=lambda s: None)
    b = run(config_from_dict(moe_config(tmp_path, stream, gate_noise=0.5)), progress=lambda s: None)
    assert a.accuracy_matrix.tolist() == b.accuracy_matrix.tolist()
    assert a.results["evaluations"] == b.results["evaluations"]
