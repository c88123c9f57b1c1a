"""encoder_training: per_group: every new group trains its own copy of the encoders, warm-started from the
group it grew from, and freezes it with its experts, so old experiences compute what they did."""

from __future__ import annotations

import pytest
import torch
from test_domain_statistics import domain_stream

from conftest import build_model_and_stream, tiny_config, train_experience
from lifelong_moe import ConfigError, config_from_dict, run


def per_group_config(root, **params):
    cfg = tiny_config(root, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32,
                                                               "encoder_training": "per_group", **params}})
    cfg["stream"] = domain_stream(dim=8, n_train=40, n_test=20)
    return cfg


def _state(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_each_group_trains_its_own_encoder_warm_started_and_old_paths_stay(tmp_path):
    cfg, s, model = build_model_and_stream(per_group_config(tmp_path))
    train_experience(cfg, model, s.train_stream[0])
    base = {m: _state(enc) for m, enc in model.encoders.items()}
    train_experience(cfg, model, s.train_stream[1], seed=1)
    assert sorted(model.group_encoders.copies) == ["1"] and sorted(model.group_encoders.copies["1"]) == sorted(model.encoders)
    for m, enc in model.encoders.items():
        assert all(torch.equal(a, p) for a, p in zip(base[m], enc.parameters(), strict=True))  # base frozen
        assert any(not torch.equal(a, p) for a, p in zip(base[m], model.group_encoders.copies["1"][m].parameters(), strict=True))
    x = s.test_stream[0].dataset.collate_fn([s.test_stream[0].dataset[i] for i in range(16)])[0]
    model.eval()
    with torch.no_grad():
        paths = [model.forward_outputs(x, current=e).logits for e in (0, 1)]
    group1 = _state(model.group_encoders.copies["1"])
    model.on_experience_start(s.train_stream[2])  # warm start: group 2's encoders begin as group 1's
    assert all(torch.equal(a, p) for a, p in zip(group1, model.group_encoders.copies["2"].parameters(), strict=True))
    assert all(p.requires_grad for p in model.group_encoders.copies["2"].parameters())
    assert not any(p.requires_grad for p in model.group_encoders.copies["1"].parameters())
    model.on_experience_end(s.train_stream[2])
    model.eval()
    with torch.no_grad():
        after = [model.forward_outputs(x, current=e).logits for e in (0, 1)]
    assert max((a - b).abs().max().item() for a, b in zip(paths, after, strict=True)) < 1e-5


def test_a_sample_is_encoded_by_its_routed_group(tmp_path):
    """At test time each sample's tokens come from the encoders of the group its experience routes to:
    scrambling group 1's encoder changes only the samples routed to experience 1."""
    cfg, s, model = build_model_and_stream(per_group_config(tmp_path))
    for i in range(2):
        train_experience(cfg, model, s.train_stream[i], seed=i)
    data = s.test_stream[1].dataset
    x = data.collate_fn([data[i] for i in range(20)])[0]
    model.eval()
    with torch.no_grad():
        before = model.forward_outputs(x)
        routed_1 = before.routed == 1
        for p in model.group_encoders.copies["1"].parameters():
            p.add_(torch.randn_like(p))
        after = model.forward_outputs(x)
    changed = (before.logits - after.logits).abs().amax(1) > 1e-6
    assert routed_1.any() and torch.equal(changed, routed_1)


def test_per_group_encoders_run_end_to_end(tmp_path):
    res = run(config_from_dict(per_group_config(tmp_path)), progress=lambda s: None)
    assert min(res.accuracy_matrix[i, i] for i in range(3)) > 0.8
    assert res.results["parameters_per_experience"][2]["total"] > res.results["parameters_per_experience"][0]["total"]
    with pytest.raises(ConfigError, match=r"model\.params\.encoder_training: use introduced, never, always, per_group, got 'by_group'"):
        run(config_from_dict(per_group_config(tmp_path, encoder_training="by_group")), progress=lambda s: None)
