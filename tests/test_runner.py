"""The lifelong loop: outputs on disk and in TensorBoard, determinism, metrics recomputable from R."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import tiny_config
from lifelong_moe import ConfigError, config_from_dict, run, summarize


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return run(config_from_dict(tiny_config(root)), progress=lambda s: None)


def test_outputs_written(first_run):
    d = first_run.run_dir
    assert d.name == "version_0" and d.parent.name == "tiny"
    for f in ("config.yaml", "results.json", "accuracy_matrix.csv", "accuracy_matrix.png", "forgetting_curves.png"):
        assert (d / f).is_file() and (d / f).stat().st_size > 0, f
    res = json.loads((d / "results.json").read_text())
    assert res["status"] == "complete" and res["completed_experiences"] == 2
    R = np.asarray(res["accuracy_matrix"])
    assert R.shape == (2, 2) and np.all((R >= 0) & (R <= 1))
    assert len(res["untrained_accuracy"]) == 2
    assert len(res["time_per_experience_s"]) == 2 and all(t["total_s"] > 0 for t in res["time_per_experience_s"])
    p = res["parameters_per_experience"][0]
    assert p["total"] >= p["trainable"] > 0
    csv_rows = (d / "accuracy_matrix.csv").read_text().strip().splitlines()
    assert csv_rows[0] == "after_experience,exp0,exp1" and len(csv_rows) == 3


def test_learns_and_forgets_as_naive_should(first_run):
    R = first_run.accuracy_matrix
    # each experience is learned when trained (2 well-separated classes) ...
    assert R[0, 0] > 0.9 and R[1, 1] > 0.9
    # ... class-incremental fine-tuning then forgets the old classes, and unseen classes score zero
    assert R[0, 1] == 0.0
    assert R[1, 0] < R[0, 0] - 0.3


def test_metrics_equal_recomputation_from_saved_matrix(first_run):
    res = json.loads((first_run.run_dir / "results.json").read_text())
    sizes = [e["n_test"] for e in res["experiences"]]
    again = summarize(np.asarray(res["accuracy_matrix"]), res["untrained_accuracy"], sizes)
    for key in ("acc", "avg_incremental_acc", "bwt", "fwt", "forgetting"):
        assert res["metrics"][key] == pytest.approx(again[key]), key


def test_tensorboard_has_forgetting_curves_and_stream_metrics(first_run):
    acc = EventAccumulator(str(first_run.run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("accuracy/exp00", "accuracy/exp01", "stream/acc", "stream/bwt", "stream/fwt", "stream/seen_acc", "train_loss/exp00", "train_loss_step/exp01",
                "train_acc/exp01"):
        assert tag in tags["scalars"], tag
    curve = acc.Scalars("accuracy/exp00")
    assert [e.step for e in curve] == [0, 1]
    assert [e.value for e in curve] == pytest.approx(first_run.accuracy_matrix[:, 0].tolist())
    assert "accuracy_matrix" in tags["images"]
    assert (first_run.run_dir / "hparams.yaml").is_file()
    # every stream curve lives in one event file: TensorBoard reads files in name order, and curves split
    # over files named ...9 and ...10 would go backwards in step and lose events
    holding = []
    for path in first_run.run_dir.glob("events.out.tfevents.*"):
        single = EventAccumulator(str(path), size_guidance={"scalars": 0})
        single.Reload()
        if "accuracy/exp00" in single.Tags()["scalars"]:
            holding.append(path.name)
    assert len(holding) == 1, holding


def test_same_config_and_seed_give_same_matrix(first_run, tmp_path):
    again = run(config_from_dict(tiny_config(tmp_path)), progress=lambda s: None)
    assert np.array_equal(again.accuracy_matrix, first_run.accuracy_matrix)
    other = run(config_from_dict(tiny_config(tmp_path, seed=3)), progress=lambda s: None)
    assert other.run_dir.name == "version_1"  # a new version, the earlier run untouched
    assert not np.array_equal(other.accuracy_matrix, first_run.accuracy_matrix)


def test_existing_run_directory_is_never_overwritten(first_run):
    cfg = tiny_config(first_run.run_dir.parent.parent)
    cfg["output"]["version"] = "version_0"
    before = (first_run.run_dir / "results.json").read_bytes()
    with pytest.raises(ConfigError, match=r"output\.version: .* already holds a run"):
        run(config_from_dict(cfg), progress=lambda s: None)
    assert (first_run.run_dir / "results.json").read_bytes() == before


def test_cumulative_reference_gives_intransigence(first_run, tmp_path):
    joint = run(config_from_dict(tiny_config(tmp_path, strategy={"name": "cumulative"})), progress=lambda s: None)
    assert joint.accuracy_matrix[1, 0] > first_run.accuracy_matrix[1, 0]  # joint training keeps old classes
    cfg = tiny_config(tmp_path, reference_results=str(joint.run_dir / "results.json"))
    naive = run(config_from_dict(cfg), progress=lambda s: None)
    expected = [joint.accuracy_matrix[k, k] - naive.accuracy_matrix[k, k] for k in range(2)]
    assert naive.metrics["intransigence_per_experience"] == pytest.approx(expected)


def test_cpu_threads_setting_is_applied_and_checked(tmp_path):
    import torch

    cfg = tiny_config(tmp_path)
    before = torch.get_num_threads()
    cfg["trainer"]["cpu_threads"] = 1 if before > 1 else 2
    during: list[int] = []
    try:
        run(config_from_dict(cfg), progress=lambda s: during.append(torch.get_num_threads()))
        assert during and set(during) == {cfg["trainer"]["cpu_threads"]}  # every experience ran on the setting
        assert torch.get_num_threads() == before  # and the caller's count came back (later runs sum as alone)
    finally:
        torch.set_num_threads(before)
    cfg["trainer"]["cpu_threads"] = -1
    with pytest.raises(ConfigError, match=r"trainer\.cpu_threads"):
        config_from_dict(cfg)
