"""Bad-input battery, names and concurrency family: names used as paths (`name`, `output.version`,
`output.root`), command lines, `compare`'s own arguments, and several runs started at once with one
name. Names are one path component; `output.root` alone chooses where runs go; N processes asking for a
run directory together get N distinct ones."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from battery import Earlier, claim_many, one_line_error, run_when_ready, write_config
from lifelong_moe.cli import main


def named(**top: Any) -> Callable[[Earlier, Path], list[str]]:
    def build(earlier: Earlier, tmp: Path) -> list[str]:
        return [str(write_config(tmp / "c.yaml", earlier.config(**top)))]

    return build


def output(**settings: Any) -> Callable[[Earlier, Path], list[str]]:
    def build(earlier: Earlier, tmp: Path) -> list[str]:
        cfg = earlier.config()
        cfg["output"].update(settings)
        return [str(write_config(tmp / "c.yaml", cfg))]

    return build


def root_under_a_file(earlier: Earlier, tmp: Path) -> list[str]:
    (tmp / "a_file").write_text("not a directory")
    cfg = earlier.config()
    cfg["output"]["root"] = str(tmp / "a_file" / "runs")
    return [str(write_config(tmp / "c.yaml", cfg))]


SEP = "contains a path separator; it must be a single name (use output.root to choose where runs go)"
CASES = [
    ("name climbing out", named(name="../escaped"), (f"name: '../escaped' {SEP}",)),
    ("absolute name", named(name="/tmp/lifelong-moe-escaped"), (f"name: '/tmp/lifelong-moe-escaped' {SEP}",)),
    ("name nested in an earlier run", named(name="tiny/version_0"), (f"name: 'tiny/version_0' {SEP}",)),
    ("empty name", named(name=""), ("name: must be a non-empty name, got ''",)),
    ("blank name", named(name="   "), ("name: must be a non-empty name",)),
    ("name '.'", named(name="."), ("name: '.' is not a name; use output.root to choose where runs go",)),
    ("name '..'", named(name=".."), ("name: '..' is not a name",)),
    ("backslash in the name", named(name="a\\b"), (f"name: 'a\\b' {SEP}",)),
    ("newline in the name", named(name="two\nlines"), ("name: 'two\\nlines' contains a control character",)),
    ("name padded with spaces", named(name=" tiny "), ("name: ' tiny ' starts or ends with white space",)),
    ("name of 300 characters", named(name="x" * 300), ("name: longer than 200 bytes",)),
    ("name of 100 four-byte characters", named(name="\U0001f600" * 100), ("name: longer than 200 bytes",)),
    ("name as a list", named(name=["a", "b"]), ("name",)),
    ("version climbing out", output(version="../../x"), (f"output.version: '../../x' {SEP}",)),
    ("absolute version", output(version="/tmp/x"), (f"output.version: '/tmp/x' {SEP}",)),
    ("nested version", output(version="a/b"), (f"output.version: 'a/b' {SEP}",)),
    ("empty version", output(version=""), ("output.version: must be a non-empty name",)),
    ("version '.'", output(version="."), ("output.version: '.' is not a name",)),
    ("version of the earlier run", output(version="version_0"), ("output.version:", "version_0 already holds a run")),
    ("empty output root", output(root=""), ("output.root: must be a directory path, got ''",)),
    ("output root under a file", root_under_a_file, ("output.root: cannot create", "a_file is not a directory")),
]


@pytest.mark.parametrize("name,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_name(earlier, tmp_path, capsys, name, build, expected):
    argv = build(earlier, tmp_path)
    lines = [one_line_error(main, [command, *argv], capsys, *expected) for command in ("validate", "run")]
    assert lines[0] == lines[1]
    earlier.assert_untouched()
    assert not Path("/tmp/lifelong-moe-escaped").exists() and not (earlier.root.parent / "escaped").exists()


def test_output_root_that_cannot_be_created(earlier, tmp_path, capsys):
    """Only creating it shows (even root cannot create folders in /proc): run refuses, nothing is left."""
    path = write_config(tmp_path / "c.yaml", earlier.config())
    one_line_error(main, ["run", str(path), "output.root=/proc/lifelong-moe-runs"], capsys, "output.root: cannot create /proc/lifelong-moe-runs/tiny")
    earlier.assert_untouched()


def _good(earlier: Earlier, tmp: Path) -> str:
    return str(write_config(tmp / "c.yaml", earlier.config()))


COMMAND_LINES = [
    ("no command", lambda c: [], ("the following arguments are required: {run,compare,validate,list,predict,report}",)),
    ("unknown command", lambda c: ["train", c], ("argument {run,compare,validate,list,predict,report}: invalid choice: 'train'",)),
    ("run without a config", lambda c: ["run"], ("the following arguments are required: config",)),
    ("--resume without a directory", lambda c: ["run", c, "--resume"], ("argument --resume: expected one argument",)),
    ("unknown option", lambda c: ["run", c, "--fast"], ("unrecognized arguments: --fast",)),
    ("seeds as a word", lambda c: ["compare", c, "--seeds", "three"], ("argument --seeds: invalid int value: 'three'",)),
    ("zero seeds", lambda c: ["compare", c, "--seeds", "0"], ("--seeds: must be at least 1, got 0",)),
    ("negative seeds", lambda c: ["compare", c, "--seeds=-3"], ("--seeds: must be at least 1, got -3",)),
    ("seeds beyond the largest seed", lambda c: ["compare", c, "--seeds", str(2**33)], ("--seeds: seeds 0..8589934591 go beyond the largest seed",)),
    ("empty strategies", lambda c: ["compare", c, "--strategies", ""], ("--strategies: the list is empty",)),
    ("only commas", lambda c: ["compare", c, "--strategies", ",,"], ("--strategies: the list is empty",)),
    ("a strategy twice", lambda c: ["compare", c, "--strategies", "naive,naive"], ("--strategies: a name appears twice",)),
    ("unknown strategy", lambda c: ["compare", c, "--strategies", "naive,../x"], ("--strategies: unknown '../x'",)),
    ("compare name too long", lambda c: ["compare", c, "name=" + "y" * 195], ("name: longer than 200 bytes",)),
]


@pytest.mark.parametrize("name,argv,expected", COMMAND_LINES, ids=[c[0] for c in COMMAND_LINES])
def test_bad_command_line(earlier, tmp_path, capsys, name, argv, expected):
    one_line_error(main, argv(_good(earlier, tmp_path)), capsys, *expected)
    earlier.assert_untouched()


@pytest.mark.slow
def test_claims_at_the_same_moment_get_distinct_directories(tmp_path):
    """The tightest race: 8 processes claim 25 directories each under one name, all released at once."""
    ctx = mp.get_context("spawn")
    n_proc, n_each = 8, 25
    barrier, results = ctx.Barrier(n_proc), ctx.Queue()
    procs = [ctx.Process(target=claim_many, args=(str(tmp_path), "same", n_each, barrier, results)) for _ in range(n_proc)]
    for p in procs:
        p.start()
    claimed = [d for _ in procs for d in results.get(timeout=300)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(claimed) == len(set(claimed)) == n_proc * n_each
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == sorted(Path(d).name for d in claimed)


@pytest.mark.slow
def test_runs_started_together_with_one_name_get_their_own_directories(earlier, tmp_path):
    """N whole runs through the library, same name, released together: N directories, each intact."""
    n = 4
    cfg = earlier.config(train={"epochs": 1, "batch_size": 16, "lr": 0.01}, evaluate_untrained=False,
                         modality_eval={"subsets": False, "single_each_experience": False, "missing_rates": []})
    cfg["output"] = {"root": str(tmp_path / "runs"), "plots": False}
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["battery", "lifelong_moe.runner"])
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=run_when_ready, args=(cfg, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    finished = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    dirs = [Path(d) for d, _ in finished]
    assert len(set(dirs)) == n
    assert sorted(d.name for d in (tmp_path / "runs" / "tiny").iterdir()) == [f"version_{i}" for i in range(n)]
    expected_R = finished[0][1]
    for run_dir, R in finished:
        run_dir = Path(run_dir)
        results_json = json.loads((run_dir / "results.json").read_text())
        assert results_json["status"] == "complete" and results_json["accuracy_matrix"] == R == expected_R
        assert "name: tiny" in (run_dir / "config.yaml").read_text()
        checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        assert checkpoint["completed"] == 2 and checkpoint["R"] == R
        assert len([p for p in run_dir.iterdir() if p.name.startswith("events.out.tfevents")]) >= 1
