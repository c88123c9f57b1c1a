"""`predict` and `report` on run directories that were tampered with: a checkpoint.pt copied from another run
(another stream, or the same config with another seed or lr) and a damaged results.json are each one line
naming what is wrong, exit code 2, and nothing already written is lost. `predict -o -` writes the CSV to
standard output and its progress lines to standard error."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import datafiles as D
from battery import one_line_error
from conftest import tiny_config
from lifelong_moe import config_from_dict, run
from lifelong_moe.cli import main

WINES = ("barbera", "nebbiolo", "dolcetto", "grignolino")


def _image_config(root: Path, images: Path, **train: Any) -> dict[str, Any]:
    cfg = tiny_config(root, model={"name": "moe"}, train={"epochs": 1, "batch_size": 8, "lr": 0.01, **train})
    cfg["name"] = "wine"
    cfg["stream"] = {"scenario": "class_incremental", "split": {"source": "wine", "n_experiences": 2},
                     "sources": {"wine": {"kind": "image_folder", "params": {"root": str(images), "size": [8, 8]}}}}
    cfg["trainer"]["cpu_threads"] = 1
    cfg["modality_eval"] = {"subsets": False, "single_each_experience": False, "missing_rates": []}
    cfg["output"]["plots"] = False
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three image runs of one stream (seed 0; seed 1; lr 0.02) and a run of the synthetic stream."""
    tmp = tmp_path_factory.mktemp("tampered")
    images = D.image_folder(tmp / "wine", n_per_class=3, classes=WINES)
    quiet = {"progress": lambda _: None}
    made = {
        "image": run(config_from_dict(_image_config(tmp / "runs", images)), **quiet).run_dir,
        "seed": run(config_from_dict({**_image_config(tmp / "runs", images), "seed": 1}), **quiet).run_dir,
        "lr": run(config_from_dict(_image_config(tmp / "runs", images, lr=0.02)), **quiet).run_dir,
        "synthetic": run(config_from_dict(tiny_config(tmp / "runs", model={"name": "moe"}, train={"epochs": 1, "batch_size": 16, "lr": 0.01})),
                         **quiet).run_dir,
    }
    return {**made, "images": images}


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _image(runs: dict[str, Path]) -> Path:
    return next(runs["images"].rglob("*.png"))


# ---- predict: the checkpoint must be the run's own ------------------------------------------------
@pytest.mark.parametrize("other, key", [("synthetic", "modality_eval"), ("seed", "seed"), ("lr", "train.lr")])
def test_predict_refuses_a_checkpoint_of_another_run(runs, tmp_path, capsys, other, key):
    run_dir = _copy(runs["image"], tmp_path)
    shutil.copyfile(runs[other] / "checkpoint.pt", run_dir / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    out = tmp_path / "pred.csv"
    line = one_line_error(main, ["predict", str(run_dir), str(_image(runs)), "-o", str(out)], capsys,
                          f"predict: {run_dir / 'checkpoint.pt'}", "config.yaml", f"differs at {key}")
    assert "Traceback" not in line and not out.exists()
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_predict_refuses_a_checkpoint_that_is_not_the_final_model(runs, tmp_path, capsys):
    import torch

    run_dir = _copy(runs["image"], tmp_path)  # as if copied from an unfinished run of the same config
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**payload, "completed": 1}, run_dir / "checkpoint.pt")
    one_line_error(main, ["predict", str(run_dir), str(_image(runs)), "-o", str(tmp_path / "pred.csv")], capsys,
                   "is not this run's final model: it holds 1 completed experience(s) of the run's 2")


def test_predict_takes_its_own_checkpoint_wherever_the_run_was_moved(runs, tmp_path, capsys):
    run_dir = _copy(runs["image"], tmp_path)  # output.root in config.yaml no longer names where it is
    assert main(["predict", str(run_dir), str(_image(runs)), "-o", str(tmp_path / "pred.csv")]) == 0
    assert len(list(csv.DictReader(io.StringIO((tmp_path / "pred.csv").read_text())))) == 1


def test_predict_takes_a_run_made_before_a_setting_existed(runs, tmp_path, capsys):
    """A run written before today's code added a setting (here: as if `trainer.cpu_threads` were new) holds it in
    neither its checkpoint nor its config.yaml: the checkpoint is still its own."""
    import torch
    import yaml

    run_dir = _copy(runs["image"], tmp_path)
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    payload["config"]["trainer"].pop("cpu_threads")
    torch.save(payload, run_dir / "checkpoint.pt")
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    written["trainer"].pop("cpu_threads")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    assert main(["predict", str(run_dir), str(_image(runs)), "-o", str(tmp_path / "pred.csv")]) == 0, capsys.readouterr().err


# ---- predict -o -: the CSV on standard output ----------------------------------------------------
def test_predict_to_stdout_writes_the_csv_there_and_no_file(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = sorted(str(f) for f in runs["images"].rglob("*.png"))[:3]
    capsys.readouterr()
    assert main(["predict", str(runs["image"]), *files, "-o", "-"]) == 0
    out = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out.out)))
    assert [r["file"] for r in rows] == files and out.out.splitlines()[0] == "file,modality,class,label,score,experience"
    assert "[lifelong-moe]" in out.err and "standard output" in out.err  # progress goes to stderr
    assert not (tmp_path / "-").exists()
    # the same text as a file gets
    assert main(["predict", str(runs["image"]), *files, "-o", str(tmp_path / "pred.csv")]) == 0
    assert (tmp_path / "pred.csv").read_bytes() == out.out.encode()


def test_predict_to_stdout_writes_nothing_when_it_fails(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(main, ["predict", str(runs["image"]), str(tmp_path / "missing.png"), "-o", "-"], capsys,
                   "predict: no such file or folder")
    assert not (tmp_path / "-").exists()


# ---- report (and predict): results.json must be a run's ------------------------------------------
def _damaged(res: dict[str, Any], how: str) -> Any:
    if how == "list":
        return [1, 2]
    if how == "no_matrix":
        return {k: v for k, v in res.items() if k != "accuracy_matrix"}
    if how == "small_matrix":
        return {**res, "accuracy_matrix": [[1.0]]}
    if how == "ragged_matrix":
        return {**res, "accuracy_matrix": [[1.0, 0.5], [1.0]]}
    if how == "word_in_matrix":
        return {**res, "accuracy_matrix": [[1.0, 0.5], [1.0, "high"]]}
    if how == "experiences":
        return {**res, "experiences": {"exp0": {}}}
    if how == "experience_key":
        return {**res, "experiences": [{k: v for k, v in e.items() if k != "name"} for e in res["experiences"]]}
    if how == "unnamed_class":
        return {**res, "class_names": res["class_names"][:1]}
    if how == "metric":
        return {**res, "metrics": {**res["metrics"], "acc": "0.9"}}
    if how == "per_class":
        return {**res, "per_class": [{**r, "confusion_matrix": [[1]]} for r in res["per_class"]]}
    raise AssertionError(how)


DAMAGE = [
    ("list", "not a mapping"),
    ("no_matrix", "no 'accuracy_matrix'"),
    ("small_matrix", "accuracy_matrix is 1x1 but the run has 2 experiences (exp0, exp1)"),
    ("ragged_matrix", "accuracy_matrix is not square"),
    ("word_in_matrix", "accuracy_matrix[1][1] is not a number"),
    ("experiences", "experiences is not a list"),
    ("experience_key", "experiences[0] has no 'name'"),
    ("unnamed_class", "class_names names no class 1"),
    ("metric", "metrics.acc is not a number"),
    ("per_class", "per_class[0].confusion_matrix"),
]


@pytest.mark.parametrize("how, why", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_report_refuses_a_damaged_results_file_in_one_line(runs, tmp_path, capsys, how, why):
    run_dir = _copy(runs["image"], tmp_path)
    page = run_dir / "report.html"
    assert main(["report", str(run_dir)]) == 0
    before = page.read_bytes()
    results = run_dir / "results.json"
    results.write_text(json.dumps(_damaged(json.loads(results.read_text()), how)))
    one_line_error(main, ["report", str(run_dir)], capsys, f"report: {results} is not a lifelong-moe results file", why)
    assert page.read_bytes() == before  # the earlier page is kept
    one_line_error(main, ["predict", str(run_dir), str(_image(runs)), "-o", str(tmp_path / "p.csv")], capsys,
                   f"predict: {results} is not a lifelong-moe results file", why)
    assert not (tmp_path / "p.csv").exists()


def test_report_refuses_results_that_are_not_json(runs, tmp_path, capsys):
    run_dir = _copy(runs["image"], tmp_path)
    (run_dir / "results.json").write_text("{not json")
    one_line_error(main, ["report", str(run_dir)], capsys, f"report: {run_dir / 'results.json'} is unreadable")
    assert not (run_dir / "report.html").exists()
