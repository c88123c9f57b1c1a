"""A run stopped after any experience (an exception, or SIGKILL at an arbitrary moment) and resumed ends
with the same R, metrics and routing records as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_config, write_yaml
from lifelong_moe import ConfigError, config_from_dict, run
from lifelong_moe.cli import main

STREAM = {
    "scenario": "class_incremental",
    "sources": {"syn": {"kind": "synthetic", "params": {"n_classes": 6, "n_modalities": 2, "dim": 8,
                                                          "n_train_per_class": 60, "n_test_per_class": 20, "separation": 3.0}}},
    "split": {"source": "syn", "n_experiences": 3},
}


def moe_cfg(root: Path, **extra) -> dict:
    """Modality dropout draws from the global generator during training: resume must restore its state."""
    cfg = tiny_config(root, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32}}, **extra)
    cfg["stream"] = STREAM
    cfg["train"]["modality_dropout"] = 0.3
    return cfg


class Crash(Exception):
    pass


def crash_after(n: int):
    def progress(line: str) -> None:
        if f"experience {n}/" in line:
            raise Crash(line)
    return progress


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run(config_from_dict(moe_cfg(tmp_path_factory.mktemp("full"))), progress=lambda s: None)


@pytest.mark.parametrize("stop_after", [1, 2])
def test_resume_after_an_interruption_gives_the_same_results(tmp_path, uninterrupted, stop_after):
    cfg = config_from_dict(moe_cfg(tmp_path))
    with pytest.raises(Crash):
        run(cfg, progress=crash_after(stop_after))
    run_dir = tmp_path / "tiny" / "version_0"
    assert json.loads((run_dir / "results.json").read_text())["completed_experiences"] == stop_after
    resumed = run(cfg, progress=lambda s: None, resume=str(run_dir))
    assert resumed.run_dir == run_dir
    assert resumed.accuracy_matrix.tolist() == uninterrupted.accuracy_matrix.tolist()
    assert resumed.results["evaluations"] == uninterrupted.results["evaluations"]
    for key in ("acc", "bwt", "forgetting", "avg_incremental_acc"):
        assert resumed.metrics[key] == uninterrupted.metrics[key]
    totals = [p["total"] for p in resumed.results["parameters_per_experience"]]
    assert totals == [p["total"] for p in uninterrupted.results["parameters_per_experience"]]


@pytest.mark.slow
def test_sigkill_mid_stream_then_resume_from_the_cli(tmp_path, uninterrupted):
    cfg_path = write_yaml(tmp_path / "c.yaml", moe_cfg(tmp_path / "runs", train={"epochs": 12, "batch_size": 16, "lr": 0.01}))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "lifelong_moe.cli", "run", str(cfg_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "runs" / "tiny" / "version_0" / "results.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if results.is_file() and json.loads(results.read_text())["completed_experiences"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # at whatever point of experience 2 (or 3) it has reached
    proc.wait()
    killed_at = json.loads(results.read_text())
    assert killed_at["status"] == "running"

    resumed = subprocess.run([sys.executable, "-m", "lifelong_moe.cli", "run", str(cfg_path), "--resume", str(results.parent)],
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    final = json.loads(results.read_text())
    assert final["status"] == "complete"
    reference = run(config_from_dict(moe_cfg(tmp_path / "ref", train={"epochs": 12, "batch_size": 16, "lr": 0.01})), progress=lambda s: None)
    written = json.loads((reference.run_dir / "results.json").read_text())
    assert final["accuracy_matrix"] == written["accuracy_matrix"]
    assert final["evaluations"] == written["evaluations"]
    assert final["metrics"] == written["metrics"]


def test_resume_refuses_another_config_and_a_finished_run(tmp_path, uninterrupted, capsys):
    cfg = config_from_dict(moe_cfg(tmp_path))
    with pytest.raises(Crash):
        run(cfg, progress=crash_after(1))
    run_dir = tmp_path / "tiny" / "version_0"
    path = write_yaml(tmp_path / "other.yaml", moe_cfg(tmp_path, seed=5))
    assert main(["run", str(path), "--resume", str(run_dir)]) == 2
    assert f"--resume: {run_dir} was made by another config (it differs at seed)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="already completed all 3 experiences"):
        run(config_from_dict(moe_cfg(tmp_path)), progress=lambda s: None, resume=str(uninterrupted.run_dir))
    assert main(["run", str(path), "--resume", str(tmp_path / "nowhere")]) == 2
    assert "--resume: no run directory at" in capsys.readouterr().err


def test_dense_model_resumes_too(tmp_path):
    cfg_dict = tiny_config(tmp_path / "a")
    cfg_dict["stream"] = STREAM
    full = run(config_from_dict(cfg_dict), progress=lambda s: None)
    cfg_dict["output"]["root"] = str(tmp_path / "b")
    cfg = config_from_dict(cfg_dict)
    with pytest.raises(Crash):
        run(cfg, progress=crash_after(1))
    resumed = run(cfg, progress=lambda s: None, resume=str(tmp_path / "b" / "tiny" / "version_0"))
    assert resumed.accuracy_matrix.tolist() == full.accuracy_matrix.tolist()


def _statistics(state: dict) -> dict:
    """The model's class statistics and the posteriors fitted from them (float64 moments, LDA weights)."""
    keys = [k for k in state if k.startswith("statistics.") or ".statistics." in k]
    assert keys, "the MoE model keeps no class statistics"
    return {k: state[k] for k in keys}


def test_class_statistics_survive_checkpoint_and_resume_bit_identically(tmp_path, uninterrupted):
    import torch

    from lifelong_moe.checkpointing import load_checkpoint
    from lifelong_moe.run_state import RunState
    from lifelong_moe.runner import build_model
    from scenarios import build_stream

    cfg = config_from_dict(moe_cfg(tmp_path))
    with pytest.raises(Crash):
        run(cfg, progress=crash_after(2))
    run_dir = tmp_path / "tiny" / "version_0"
    saved = load_checkpoint(run_dir)
    model = build_model(cfg, build_stream(cfg.stream, cfg.seed, validation_fraction=cfg.train.validation_fraction))
    RunState.from_checkpoint(saved, model)
    restored = model.state_dict()
    for key, value in _statistics(saved["model"]).items():
        assert restored[key].dtype == value.dtype and torch.equal(restored[key], value), key

    run(cfg, progress=lambda s: None, resume=str(run_dir))
    resumed = _statistics(load_checkpoint(run_dir)["model"])
    straight = _statistics(load_checkpoint(uninterrupted.run_dir)["model"])
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key


def straight_and_resumed(tmp_path: Path, edit, stop_after: int):
    """An uninterrupted run and one stopped after `stop_after` experiences then resumed, of the tiny MoE
    config changed by `edit(cfg)`: (straight result, resumed result, the resumed run's directory)."""
    cfgs = []
    for where in ("full", "stopped"):
        cfg = moe_cfg(tmp_path / where)
        edit(cfg)
        cfgs.append(config_from_dict(cfg))
    straight = run(cfgs[0], progress=lambda s: None)
    with pytest.raises(Crash):
        run(cfgs[1], progress=crash_after(stop_after))
    run_dir = tmp_path / "stopped" / "tiny" / "version_0"
    return straight, run(cfgs[1], progress=lambda s: None, resume=str(run_dir)), run_dir


def test_a_domain_stream_resumes_with_its_frozen_conditionals(tmp_path):
    """The frozen discriminants, floors and expert weights of a domain-incremental stream (classes recur,
    `conditional: frozen`) travel with the checkpoint: a resumed run ends with the same R, and makes the
    same choices, as an uninterrupted one."""
    import torch
    from test_domain_statistics import domain_stream

    from lifelong_moe.checkpointing import load_checkpoint

    def frozen_domains(cfg: dict) -> None:
        cfg.update(stream=domain_stream())
        cfg["model"]["params"]["statistics"] = {"conditional": "frozen"}

    straight, resumed, run_dir = straight_and_resumed(tmp_path, frozen_domains, 2)
    assert resumed.accuracy_matrix.tolist() == straight.accuracy_matrix.tolist()
    chosen = [r.results["evaluations"][-1]["statistics"]["chosen_per_experience"] for r in (straight, resumed)]
    assert chosen[0] == chosen[1] and "expert_weight" in chosen[1][2]  # the choice after the resume, as without it
    frozen = {k: v for k, v in load_checkpoint(run_dir)["model"].items() if "frozen" in k}
    assert frozen and all(torch.equal(v, load_checkpoint(straight.run_dir)["model"][k]) for k, v in frozen.items())


@pytest.mark.parametrize("params", [{"communication": "pnn"}, {"encoder_training": "per_group"},
                                    {"encoder_training": "per_group", "gate": "nested"},
                                    {"communication": "shared", "shared": {"drift_bound": 0.05}}])
def test_communication_modules_and_drift_origins_resume(tmp_path, params):
    """pnn's per-older-group adapters and per-group encoders are rebuilt with the same shapes, and a bounded
    shared expert's origin travels with the checkpoint: the resumed run ends with the same R and parameters
    as an uninterrupted one."""
    import torch

    from lifelong_moe.checkpointing import load_checkpoint

    straight, resumed, run_dir = straight_and_resumed(tmp_path, lambda cfg: cfg["model"]["params"].update(params), 1)
    assert resumed.accuracy_matrix.tolist() == straight.accuracy_matrix.tolist()
    a, b = load_checkpoint(run_dir)["model"], load_checkpoint(straight.run_dir)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    made = {"pnn": ".comm.", "per_group": "nested.stages." if "gate" in params else "group_encoders.",
            "shared": "origin__"}[params.get("communication", "per_group")]
    assert any(made in k for k in a)
