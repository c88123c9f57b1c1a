"""Modalities: a modality added mid-stream leaves the past untouched, every subset of modalities works,
missing-modality and imbalance evaluation, modality dropout, and clear errors for malformed samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from conftest import build_model_and_stream, tiny_config, train_experience
from lifelong_moe import ConfigError, config_from_dict, run
from lifelong_moe.errors import InputError
from scenarios import MASK_KEY
from scenarios.batch import collate_modalities
from scenarios.masking import drop_modalities, keep_subset, modality_subsets, present_matrix, with_missing_rate

SYN = {"kind": "synthetic", "params": {"n_classes": 4, "n_modalities": 2, "dim": 8, "n_train_per_class": 40,
                                       "n_test_per_class": 25, "separation": 2.0}}
MODALITY_STREAM = {
    "scenario": "modality_incremental",
    "sources": {"s": SYN},
    "experiences": [{"source": "s", "modalities": ["m0"]}, {"source": "s", "modalities": ["m1"]},
                    {"source": "s", "modalities": ["m0", "m1"]}],
}


def moe(root, **params):
    cfg = tiny_config(root, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, **params}})
    cfg["stream"] = MODALITY_STREAM
    return cfg


def test_a_new_modality_leaves_the_past_bit_identical(tmp_path):
    cfg, s, model = build_model_and_stream(moe(tmp_path))
    train_experience(cfg, model, s.train_stream[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_experience(cfg, model, s.train_stream[1], seed=1)
    assert "encoders.m1.net.1.weight" in model.state_dict()  # the new modality got its encoder ...
    assert len(model.layers[0].pool) == 4  # ... and its experts
    after = model.state_dict()
    # class statistics accumulate by design; their fixed feature spaces (views) must not move
    accumulating = [k for k in before if k.startswith("statistics.") and ".views." not in k]
    changed = [k for k in before if k not in ("seen_classes", "task_classes", "weight_correct", *accumulating)
               and not torch.equal(before[k], after[k])]
    assert changed == []


def test_a_grown_model_survives_a_checkpoint(tmp_path):
    cfg, s, model = build_model_and_stream(moe(tmp_path))
    for i in range(3):
        train_experience(cfg, model, s.train_stream[i], seed=i)
    _, _, fresh = build_model_and_stream(moe(tmp_path))
    fresh.restore_structure(model.structure_state())
    fresh.load_state_dict(model.state_dict())  # strict: the same parameters under the same names
    data = s.test_stream[2].dataset
    x = data.collate_fn([data[i] for i in range(16)])[0]
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


def test_old_modality_accuracy_holds_within_a_point_and_pairs_use_both(tmp_path):
    res = run(config_from_dict(moe(tmp_path)), progress=lambda s: None)
    R = res.accuracy_matrix
    assert R[0, 0] > 0.8
    assert abs(R[1, 0] - R[0, 0]) <= 0.01 and abs(R[2, 0] - R[0, 0]) <= 0.01
    subsets = res.results["modality_evaluation"]["subsets"]
    # the pair experience's samples, with both modalities, beat either modality alone
    assert subsets["m0+m1"]["per_experience"][2] >= max(subsets["m0"]["per_experience"][2], subsets["m1"]["per_experience"][2])


def test_every_subset_of_modalities_runs_forward(tmp_path):
    cfg, s, model = build_model_and_stream(moe(tmp_path))
    for i in range(3):
        train_experience(cfg, model, s.train_stream[i], seed=i)
    model.eval()
    data = s.test_stream[2].dataset
    for keep in modality_subsets(["m0", "m1"]):
        view = keep_subset(data, ["m0", "m1"], keep)
        x, _y, _ = view.collate_fn([view[i] for i in range(10)])
        assert {m for m in ("m0", "m1") if x[MASK_KEY][m].any()} == set(keep)
        with torch.no_grad():
            logits = model(x)
        assert logits.shape == (10, 4) and torch.isfinite(logits.max(1).values).all()


def test_missing_rate_views_drop_at_the_rate_and_keep_one_modality(tiny):
    cfg = config_from_dict(tiny)
    from scenarios import build_stream

    data = build_stream(cfg.stream, 0).test_stream[0].dataset
    for rate in (0.0, 0.25, 0.5, 0.75):
        view = with_missing_rate(data, ["m0", "m1"], rate, seed=3)
        present = present_matrix(view, ["m0", "m1"])
        assert present.any(1).all()  # never a sample with nothing
        dropped = 1 - present.mean()
        assert dropped == pytest.approx(rate * (1 - rate / 2) if rate else 0.0, abs=0.12)  # both drawn: one restored
    only = keep_subset(data, ["m0", "m1"], ["m1"])
    assert present_matrix(only, ["m0", "m1"]).tolist() == [[False, True]] * len(data)
    x = only.collate_fn([only[i] for i in range(4)])[0]
    assert torch.count_nonzero(x["m0"]) == 0  # removed means zeroed and masked


def test_results_report_subsets_missing_rates_and_imbalance(tmp_path):
    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32}})
    res = run(config_from_dict(cfg), progress=lambda s: None)
    saved = json.loads((res.run_dir / "results.json").read_text())
    rob = saved["modality_evaluation"]
    assert list(rob["subsets"]) == ["m0", "m1", "m0+m1"]
    assert list(rob["missing_rate"]) == ["0", "0.25", "0.5", "0.75"]
    # no modality missing is exactly the final row of R, weighted by test size
    sizes = np.array([e["n_test"] for e in saved["experiences"]])
    final = np.array(saved["accuracy_matrix"][-1])
    assert rob["missing_rate"]["0"]["accuracy"] == pytest.approx(float((final * sizes).sum() / sizes.sum()), abs=1e-6)
    assert rob["subsets"]["m0+m1"]["accuracy"] == pytest.approx(rob["missing_rate"]["0"]["accuracy"], abs=1e-6)
    per_exp = saved["modality_per_experience"]
    assert len(per_exp) == 2 and per_exp[0]["token_share"] == {"m0": 0.5, "m1": 0.5}
    assert set(per_exp[1]["single_modality"]) == {"m0", "m1"}
    assert (res.run_dir / "modality_robustness.png").stat().st_size > 0


def test_modality_dropout_masks_and_zeroes_but_keeps_one():
    torch.manual_seed(0)
    x = {"a": torch.ones(2000, 3), "b": torch.ones(2000, 2, dtype=torch.long),
         MASK_KEY: {"a": torch.ones(2000, dtype=torch.bool), "b": torch.ones(2000, dtype=torch.bool)}}
    out = drop_modalities(x, 0.3, ["a", "b"])
    kept = torch.stack([out[MASK_KEY]["a"], out[MASK_KEY]["b"]], 1)
    assert kept.any(1).all()
    assert 0.2 < 1 - kept.float().mean() < 0.3  # 0.3 per modality, minus restored pairs (0.3^2 / 2)
    assert torch.equal(out["a"].sum(1) == 0, ~out[MASK_KEY]["a"]) and torch.equal(out["b"].sum(1) == 0, ~out[MASK_KEY]["b"])
    assert drop_modalities(x, 0.0, ["a", "b"]) is x


def test_modality_dropout_trains_deterministically(tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": 2, "batch_size": 16, "lr": 0.01, "modality_dropout": 0.4})
    a = run(config_from_dict(cfg), progress=lambda s: None)
    b = run(config_from_dict(cfg), progress=lambda s: None)
    assert a.accuracy_matrix.tolist() == b.accuracy_matrix.tolist()


def _samples(tiny, n=3):
    from scenarios import build_stream

    data = build_stream(config_from_dict(tiny).stream, 0).train_stream[0].dataset
    return [data[i] for i in range(n)]


def test_malformed_samples_are_named(tiny):
    samples = _samples(tiny)
    x, y, t = samples[2]
    odd = dict(x)
    odd["thermal"] = torch.zeros(3)
    with pytest.raises(InputError, match=r"sample 2 of the batch: .*\(unknown: \['thermal'\]\)"):
        collate_modalities([*samples[:2], (odd, y, t)])
    odd = dict(x)
    odd["m1"] = torch.zeros(5)
    with pytest.raises(InputError, match=r"sample 2 of the batch, modality 'm1': \(\(5,\), torch.float32\) where sample 0 has \(\(8,\)"):
        collate_modalities([*samples[:2], (odd, y, t)])
    odd = dict(x)
    odd["m0"] = x["m0"].long()
    with pytest.raises(InputError, match=r"sample 2 of the batch, modality 'm0': .*torch.int64"):
        collate_modalities([*samples[:2], (odd, y, t)])


def test_model_refuses_a_batch_of_the_wrong_shape_or_dtype(tmp_path, tiny):
    _cfg, s, model = build_model_and_stream(tiny)
    model.on_experience_start(s.train_stream[0])
    x = default_collate([smp[0] for smp in _samples(tiny)])
    with pytest.raises(InputError, match=r"modality 'm0': samples of shape \(4,\), but the model's encoder expects \(8,\)"):
        model({**x, "m0": x["m0"][:, :4]})
    with pytest.raises(InputError, match=r"modality 'm1': dtype torch.int64, but the model expects float32"):
        model({**x, "m1": x["m1"].long()})


def test_bad_modality_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.modality_dropout: must lie in \[0, 1\), got 1.5"):
        config_from_dict(tiny_config(tmp_path, train={"modality_dropout": 1.5}))
    cfg = tiny_config(tmp_path)
    cfg["modality_eval"] = {"missing_rates": [0.5, 1.0]}
    with pytest.raises(ConfigError, match=r"modality_eval\.missing_rates\[1\]: must lie in \[0, 1\), got 1.0"):
        config_from_dict(cfg)
