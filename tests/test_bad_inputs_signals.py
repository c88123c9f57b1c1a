"""Bad-input battery, signals family, through the real CLI in a subprocess: SIGINT (Ctrl-C) and SIGTERM
during training exit 130 and 143 with one stderr line saying where the run stopped and the exact command
that resumes it; the last completed experience's checkpoint is intact, and the resumed run ends with the
same R as an uninterrupted one. A signal before the first experience finishes leaves nothing behind; one
during start-up (heavy imports) gives the same single line, never a traceback."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from battery import write_config
from conftest import tiny_config
from lifelong_moe import config_from_dict, run

pytestmark = pytest.mark.slow

STREAM = {
    "scenario": "class_incremental",
    "sources": {"syn": {"kind": "synthetic", "params": {"n_classes": 6, "n_modalities": 2, "dim": 8,
                                                          "n_train_per_class": 40, "n_test_per_class": 20, "separation": 3.0}}},
    "split": {"source": "syn", "n_experiences": 3},
}
TRAIN = {"epochs": 15, "batch_size": 16, "lr": 0.01}  # long enough that a signal 0.3 s in lands in training


def _env() -> dict[str, str]:
    """The environment at call time, so that settings the session makes (private caches, offline
    libraries) reach the subprocesses as they reach the in-process reference run."""
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


CLI = [sys.executable, "-m", "lifelong_moe.cli"]


def moe_cfg(root: Path) -> dict:
    cfg = tiny_config(root, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32}}, train={**TRAIN, "modality_dropout": 0.3})
    cfg["stream"] = STREAM
    cfg["trainer"]["cpu_threads"] = 1  # the subprocess and the in-process reference sum floats in one order
    return cfg


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    result = run(config_from_dict(moe_cfg(tmp_path_factory.mktemp("reference"))), progress=lambda s: None)
    return json.loads((result.run_dir / "results.json").read_text())


def _start(cfg_path: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "run", str(cfg_path)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, limit: float = 300) -> None:
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None and not condition():
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.stderr.read() if proc.stderr else ''}"


def _one_line(proc: subprocess.Popen) -> str:
    err = proc.stderr.read() if proc.stderr else ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {err}"
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_during_training_then_resume_gives_the_same_R(tmp_path, uninterrupted, signum, code):
    cfg_path = write_config(tmp_path / "c.yaml", moe_cfg(tmp_path / "runs"))
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    results = run_dir / "results.json"
    proc = _start(cfg_path)
    _wait_for(lambda: results.is_file() and json.loads(results.read_text())["completed_experiences"] >= 1, proc)
    time.sleep(0.3)  # into the next experience's training
    os.kill(proc.pid, signum)
    assert proc.wait(timeout=120) == code
    line = _one_line(proc)
    name = signal.Signals(signum).name
    assert line.startswith(f"lifelong-moe: interrupted by {name} during experience "), line
    command = line.split("resume with: ", 1)[1]
    assert command == shlex.join(["lifelong-moe", "run", str(cfg_path), "--resume", str(run_dir)])
    kept = int(line.split(" keeps ", 1)[1].split(" ", 1)[0])
    assert kept >= 1
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # intact, and safe to load
    assert checkpoint["completed"] == kept
    status = json.loads(results.read_text())
    assert status["status"] == "interrupted" and status["error"] == f"interrupted by {name}"

    resumed = subprocess.run([*CLI, *shlex.split(command)[1:]], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} after experience {kept}/3" in resumed.stdout
    final = json.loads(results.read_text())
    assert final["status"] == "complete"
    assert final["accuracy_matrix"] == uninterrupted["accuracy_matrix"]
    assert final["evaluations"] == uninterrupted["evaluations"]
    assert final["metrics"] == uninterrupted["metrics"]


def test_sigterm_before_the_first_experience_leaves_nothing(tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", moe_cfg(tmp_path / "runs"))
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    proc = _start(cfg_path)
    # the stream's event file comes after config.yaml, once the run's outputs exist: a signal between the
    # two finds no run yet (its directory is removed as it is created, "nothing was written")
    _wait_for(lambda: (run_dir / "config.yaml").is_file() and any(run_dir.glob("events.out.tfevents.*")), proc)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    line = _one_line(proc)
    assert line == f"lifelong-moe: interrupted by SIGTERM before the first experience finished; nothing was kept ({run_dir} removed)"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_during_start_up_prints_one_line(tmp_path, signum, code):
    """Ctrl-C while torch, Lightning and Avalanche are still importing (the first seconds)."""
    cfg_path = write_config(tmp_path / "c.yaml", moe_cfg(tmp_path / "runs"))
    proc = _start(cfg_path)
    time.sleep(1.0)
    assert proc.poll() is None
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"lifelong-moe: interrupted by {signal.Signals(signum).name}; nothing was written"], err
    assert not (tmp_path / "runs").exists()


def _python(code: str, **popen: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120, **popen)


def test_signal_inside_an_extensions_import_is_delivered_after_it():
    """torch's C extension imports numpy and swallows any exception raised there, leaving numpy half
    imported (and the Ctrl-C lost): the signal waits for the extension, then stops the command."""
    probe = """
import os, signal, sys, time
from lifelong_moe.errors import Interrupted
from lifelong_moe.interrupts import signals_raise

def hook(event, args):
    if event == "import" and args[0] == "numpy" and "torch" in sys.modules and not hook.fired:
        hook.fired = True
        os.kill(os.getpid(), signal.SIGINT)
hook.fired = False
sys.addaudithook(hook)
with signals_raise():
    try:
        import torch
        time.sleep(60)
        print("not interrupted")
    except Interrupted as err:
        import numpy
        print(err.signal_name, float(numpy.linalg.norm(numpy.ones(4))))
"""
    proc = _python(probe)
    assert proc.stdout.strip() == "SIGINT 2.0", proc.stdout + proc.stderr


def test_sighup_stops_and_an_ignored_signal_stays_ignored():
    """A closed terminal (SIGHUP) stops the command like Ctrl-C; a signal the process was started
    ignoring (`nohup`, `&` without job control) is left ignored."""
    probe = """
import os, signal, time
from lifelong_moe.errors import Interrupted
from lifelong_moe.interrupts import signals_raise
with signals_raise():
    os.kill(os.getpid(), signal.SIGINT)  # ignored since start-up
    time.sleep(0.2)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)
        print("not interrupted")
    except Interrupted as err:
        print(err.signal_name, err.exit_code)
print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
"""
    proc = _python(probe, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.stdout.split() == ["SIGHUP", "129", "True"], proc.stdout + proc.stderr


def test_only_the_first_ddp_rank_reports_an_interrupt(monkeypatch, capsys):
    """Under DDP every rank receives the signal; one line, from rank 0, and every rank exits 143."""
    from lifelong_moe import cli
    from lifelong_moe.errors import Interrupted

    def interrupted(args):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    for rank, lines in (("1", 0), ("0", 1)):
        monkeypatch.setenv("RANK", rank)
        assert cli.main(["list"]) == 143
        assert len(capsys.readouterr().err.splitlines()) == lines
