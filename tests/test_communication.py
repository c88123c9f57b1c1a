"""The expert-communication layer: every mode trains under growth, old paths stay bit-identical,
the lateral path's gradients reach only new parameters, and what communication does is reported."""

from __future__ import annotations

import json

import pytest
import torch
from test_domain_statistics import domain_stream

from conftest import build_model_and_stream, tiny_config, train_experience
from lifelong_moe import ConfigError, config_from_dict, run
from lifelong_moe.moe import MoELayer
from lifelong_moe.moe.shared_anchor import project_into_bound, relative_drift

STREAM = {
    "scenario": "class_incremental",
    "sources": {"s": {"kind": "synthetic", "params": {"n_classes": 6, "n_modalities": 2, "dim": 8, "n_train_per_class": 40,
                                                     "n_test_per_class": 20, "separation": 3.0}}},
    "split": {"source": "s", "n_experiences": 3},
}
MODES = ["none", "lateral", "attention", "pnn", "shared"]


def comm_config(root, mode, **params):
    p = {"embed_dim": 16, "expert_hidden": 32, "communication": mode, **params}
    cfg = tiny_config(root, model={"name": "moe", "params": p})
    cfg["stream"] = STREAM
    return cfg


def old_batch(stream):
    data = stream.test_stream[0].dataset
    return data.collate_fn([data[i] for i in range(16)])[0]


@pytest.mark.parametrize("mode", MODES)
def test_old_paths_are_unchanged_by_a_new_experience(tmp_path, mode):
    cfg, s, model = build_model_and_stream(comm_config(tmp_path, mode))
    train_experience(cfg, model, s.train_stream[0])
    train_experience(cfg, model, s.train_stream[1])
    x = old_batch(s)
    model.eval()
    with torch.no_grad():
        tokens = model.layers[0].norm(torch.randn(32, 16))
        experts_before = [e(tokens) for e in model.layers[0].pool.experts]
        paths_before = [model.forward_outputs(x, current=e).logits for e in (0, 1)]
    train_experience(cfg, model, s.train_stream[2])
    model.eval()
    with torch.no_grad():
        assert all(torch.equal(a, e(tokens)) for a, e in zip(experts_before, model.layers[0].pool.experts[:4], strict=True))
        paths_after = [model.forward_outputs(x, current=e).logits for e in (0, 1)]
    drift = max((a - b).abs().max().item() for a, b in zip(paths_before, paths_after, strict=True))
    if mode == "shared":
        # the setting that lets old paths move: shared experts keep training, pulled to their old values
        assert drift > 1e-3
    else:
        # the old experiences' whole computation, communication included, is unchanged; not bit for bit only
        # because the router's matmul over a wider weight (more experts) may sum in another order
        assert drift < 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_forward_and_backward_under_growth(tmp_path, mode):
    res = run(config_from_dict(comm_config(tmp_path, mode)), progress=lambda s: None)
    assert res.accuracy_matrix[2, 2] > 0.8  # it still learns each experience
    assert [p["routed_experts_per_layer"] for p in res.results["parameters_per_experience"]] == [2, 4, 6]
    report = json.loads((res.run_dir / "results.json").read_text())["evaluations"][-1]["communication"]
    assert report["mode"] == mode
    if mode == "lateral":
        assert [sorted(g) for g in report["lateral_gates"]] == [["0", "1", "2"]] * 2
        assert all(-1 <= v <= 1 for g in report["lateral_gates"] for v in g.values())
    if mode == "attention":
        attn = torch.tensor(report["attention"])  # (layer, test experience, k, k+1)
        assert attn.shape == (2, 3, 2, 3)
        assert torch.allclose(attn.sum(-1), torch.ones(2, 3, 2), atol=1e-5)  # rows are distributions
        assert attn[:, 0, :, 2].abs().max() == 0  # experience 0's group has no older group to read
        assert attn[:, 2, :, 2].min() > 0  # experience 2's group attends to the older summary
    if mode == "pnn":
        share = report["lateral_share"]  # per test experience, the laterals' share of the routed output norm
        assert len(share) == 3 and share[0] == 0 and 0 < share[2] < 1  # group 0 has nothing older to read
        assert [{g: sorted(o) for g, o in layer.items()} for layer in report["lateral_weight_norm"]] == \
            [{"0": [], "1": ["0"], "2": ["0", "1"]}] * 2  # one adapter per older group (JSON keys), trained from zero
        assert all(v > 0 for layer in report["lateral_weight_norm"] for o in layer.values() for v in o.values())
    if mode == "shared":
        assert all(0 < v < 1 for v in report["shared_share"])


@pytest.mark.parametrize("mode", ["lateral", "pnn"])
def test_lateral_gradients_reach_only_new_parameters(tmp_path, mode):
    cfg, s, model = build_model_and_stream(comm_config(tmp_path, mode))
    train_experience(cfg, model, s.train_stream[0])
    old = {id(p) for p in model.parameters()}
    model.on_experience_start(s.train_stream[1])
    data = s.train_stream[1].dataset
    x, y, t = data.collate_fn([data[i] for i in range(32)])
    model.train()
    model.zero_grad(set_to_none=True)  # gradients left over from fitting experience 0
    loss, _ = model.training_loss(x, y, t)
    loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(id(dict(model.named_parameters())[n]) not in old for n in with_grad)
    if mode == "lateral":
        adapter = model.layers[0].comm["1"].proj.weight
        assert model.layers[0].comm["0"].proj.weight.grad is None  # the old group's adapter is not trained
    else:  # the new group's adapter onto group 0's hidden units; group 0 has no adapter at all
        adapter = model.layers[0].comm["1"].project["0"].weight
        assert len(model.layers[0].comm["0"].project) == 0
        assert model.layers[0].comm["1"].reduce["0"].in_features == 2 * 32  # 2 experts x 32 hidden units
    assert adapter.grad is not None and adapter.grad.abs().sum() > 0  # the lateral path is trained


@pytest.mark.parametrize("mode", ["lateral", "attention", "pnn"])
def test_communication_starts_as_none(tmp_path, mode):
    """Adapters are zero-initialised: a freshly grown group computes what `none` would."""
    torch.manual_seed(0)
    plain, talk = MoELayer(8, 16, k=2), MoELayer(8, 16, k=2, communication=mode)
    talk.load_state_dict(plain.state_dict(), strict=False)
    for layer in (plain, talk):
        torch.manual_seed(1)
        layer.grow(2, 0)
        torch.manual_seed(2)
        layer.grow(2, 1)
    talk.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(10, 8)
    allowed = torch.tensor([[False, False, True, True]]).expand(10, -1)
    assert torch.allclose(plain(x, allowed=allowed).hidden, talk(x, allowed=allowed).hidden, atol=1e-6)


def test_bad_communication_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.params\.communication: unknown mode 'gossip'"):
        run(config_from_dict(comm_config(tmp_path, "gossip")), progress=lambda s: None)
    with pytest.raises(ConfigError, match=r"model\.params\.shared\.n: communication=shared needs at least 1 shared expert"):
        run(config_from_dict(comm_config(tmp_path, "shared", shared={"n": 0})), progress=lambda s: None)
    with pytest.raises(ConfigError, match=r"model\.params\.shared\.drift_bound: must be >= 0 or null, got -0.5"):
        run(config_from_dict(comm_config(tmp_path, "shared", shared={"drift_bound": -0.5})), progress=lambda s: None)
    with pytest.raises(ConfigError, match=r"model\.params\.shared\.drift_bound: must be a finite number, got nan"):
        run(config_from_dict(comm_config(tmp_path, "shared", shared={"drift_bound": float("nan")})), progress=lambda s: None)


def test_projection_puts_an_expert_back_on_its_bound():
    origin = [torch.tensor([3.0, 4.0]), torch.tensor([0.0])]  # ||origin|| = 5
    far = [(torch.tensor([3.0, 4.0]) + torch.tensor([6.0, 8.0]), origin[0]), (torch.tensor([0.0]), origin[1])]
    near = [(torch.tensor([3.1, 4.0]), origin[0]), (torch.tensor([0.0]), origin[1])]
    assert project_into_bound([far, near], 0.2) == pytest.approx(0.2)
    assert torch.allclose(far[0][0], torch.tensor([3.6, 4.8]))  # moved back along its direction to 0.2 * 5 = 1
    assert torch.equal(near[0][0], torch.tensor([3.1, 4.0]))  # inside the bound: untouched (drift 0.02)
    assert relative_drift(near) == pytest.approx(0.02)


@pytest.mark.parametrize("bound", [0.0, 0.02])
def test_shared_experts_stay_within_their_drift_bound(tmp_path, bound):
    """Bound 0 keeps the old experiences' computation as under the frozen modes; a positive bound lets the
    shared experts move, never further than the bound from their first-experience values."""
    cfg, s, model = build_model_and_stream(comm_config(tmp_path, "shared", shared={"drift_bound": bound, "anchor": 0.0}))
    train_experience(cfg, model, s.train_stream[0])
    x = old_batch(s)
    shared = [p.detach().clone() for p in model.layers[0].pool.shared.parameters()]
    model.eval()
    with torch.no_grad():
        before = model.forward_outputs(x, current=0).logits
    for i in (1, 2):
        train_experience(cfg, model, s.train_stream[i], seed=i)
        assert model.shared_anchor.drift() <= bound + 1e-6
    model.eval()
    with torch.no_grad():
        drift = (before - model.forward_outputs(x, current=0).logits).abs().max().item()
    moved = [not torch.equal(a, p) for a, p in zip(shared, model.layers[0].pool.shared.parameters(), strict=True)]
    if bound == 0:
        assert not any(moved) and drift < 1e-5
    else:
        assert any(moved) and model.shared_anchor.drift() == pytest.approx(bound, rel=1e-3)  # unanchored: it hits the bound
        assert drift > 1e-4


@pytest.fixture
def grow_then_reuse():
    """A growth policy that grows a group for the second experience and sends the third back to group 0."""
    from lifelong_moe.moe import GROWTH, GrowthDecision

    def policy(s):
        return GrowthDecision(True, None, "grow") if s.n_groups == 1 else GrowthDecision(False, 0, "reuse group 0")

    GROWTH.register("test_grow_then_reuse")(policy)
    yield "test_grow_then_reuse"
    GROWTH.unregister("test_grow_then_reuse")


def _accuracy(model, dataset) -> float:
    model.eval()
    with torch.no_grad():
        hits = [(model(x).argmax(1) == y).float() for x, _, y in model.batches(dataset)]
    model.train()
    return float(torch.cat(hits).mean())


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains_under_growth_and_reuse(tmp_path, mode, grow_then_reuse):
    """Grow for the second domain, then reuse the first group for the third: every group's experts stay
    bit-identical (shared experts aside, the setting that allows drift), the third domain learns through its
    own head, and every earlier domain stays within 0.05 of its accuracy."""
    cfg = comm_config(tmp_path, mode, growth=grow_then_reuse)
    cfg["stream"] = domain_stream(dim=8, n_train=40, n_test=20)
    cfg, s, model = build_model_and_stream(cfg)
    for i in range(2):
        train_experience(cfg, model, s.train_stream[i], seed=i)
    before = [_accuracy(model, s.test_stream[i].dataset) for i in range(2)]
    reused = [p.detach().clone() for p in model.layers[0].pool.experts_of(0)[0].parameters()]
    grown = [p.detach().clone() for p in model.layers[0].pool.experts_of(1)[0].parameters()]
    train_experience(cfg, model, s.train_stream[2], seed=2)
    assert model.experience_group == {0: 0, 1: 1, 2: 0}, model.growth_log
    assert all(torch.equal(a, p) for a, p in zip(reused, model.layers[0].pool.experts_of(0)[0].parameters(), strict=True))
    assert all(torch.equal(a, p) for a, p in zip(grown, model.layers[0].pool.experts_of(1)[0].parameters(), strict=True))
    after = [_accuracy(model, s.test_stream[i].dataset) for i in range(3)]
    assert after[2] > 0.8, after  # the reused group learned the new domain (3 classes: chance is 1/3)
    assert all(abs(a - b) <= 0.05 for a, b in zip(after, before)), (before, after)
