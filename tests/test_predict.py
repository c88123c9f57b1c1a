"""`lifelong-moe predict`: a run's final model applied to new files gives the answers the run's own evaluation
gave on the same files (same decoding, scaling, standardization, pretrained encoder and model), with class
names and the experience the MoE routed each file to."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datafiles as D
from conftest import tiny_config
from lifelong_moe import config_from_dict, run
from lifelong_moe.cli import main

WINES = ("barbera", "nebbiolo", "dolcetto", "grignolino")


def _config(tmp_path: Path, sources: dict[str, Any], pretrained: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = tiny_config(tmp_path / "runs", model={"name": "moe"})
    cfg["name"] = "wine"
    cfg["stream"] = {"scenario": "class_incremental", "sources": sources, "split": {"source": "wine", "n_experiences": 2}}
    cfg["train"] = {"epochs": 3, "batch_size": 8, "lr": 0.01}
    cfg["trainer"]["cpu_threads"] = 1
    cfg["modality_eval"] = {"subsets": False, "single_each_experience": False, "missing_rates": []}
    cfg["output"]["plots"] = False
    if pretrained:
        cfg["pretrained"] = pretrained
    return cfg


def _predictions(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _confusion(rows: list[dict[str, str]], names: list[str]) -> np.ndarray:
    """[true class (its folder)][predicted class] counts from predictions of files in class folders."""
    C = np.zeros((len(names), len(names)), dtype=int)
    for r in rows:
        C[names.index(Path(r["file"]).parent.name), int(r["label"])] += 1
    return C


def _check_same_as_evaluation(run_dir: Path, test_folder: Path, out: Path, capsys: Any) -> list[dict[str, str]]:
    assert main(["predict", str(run_dir), str(test_folder), "-o", str(out)]) == 0
    rows = _predictions(out)
    res = json.loads((run_dir / "results.json").read_text())
    names = res["class_names"]
    assert len(rows) == sum(e["n_test"] for e in res["experiences"])
    # the evaluation after the last experience saw exactly these files as its test samples: same answers, counted
    np.testing.assert_array_equal(_confusion(rows, names), np.asarray(res["per_class"][-1]["confusion_matrix"]))
    for r in rows:
        assert r["class"] == names[int(r["label"])] and 0.0 < float(r["score"]) <= 1.0 and r["modality"] == "image"
    return rows


def test_predict_on_a_folder_gives_the_evaluations_answers(tmp_path, capsys):
    root = D.image_folder(tmp_path / "wine", n_per_class=9, classes=WINES, split_dirs=True)
    result = run(config_from_dict(_config(tmp_path, {"wine": {"kind": "image_folder", "params": {"root": str(root), "size": [12, 12]}}})),
                 progress=lambda _: None)
    rows = _check_same_as_evaluation(result.run_dir, root / "test", tmp_path / "pred.csv", capsys)
    # the MoE routes: each file names the experience whose experts took it, and that experience holds the class
    experiences = {e["name"]: e["class_names"] for e in json.loads((result.run_dir / "results.json").read_text())["experiences"]}
    assert all(r["experience"] in experiences for r in rows)
    assert sum(r["class"] in experiences[r["experience"]] for r in rows) >= len(rows) * 0.5

    # per file, the same labels as the model's own forward pass on the stream's test samples (in file order)
    per_file = {Path(r["file"]).name: int(r["label"]) for r in rows}
    direct = _direct_predictions(result.run_dir, root)
    assert per_file == direct

    # single files, and a copy outside the class folders, give the same answers
    loose = tmp_path / "new"
    loose.mkdir()
    picked = sorted((root / "test").rglob("*.png"))[:3]
    for f in picked:
        shutil.copy(f, loose / f"{f.parent.name}-{f.name}")
    assert main(["predict", str(result.run_dir), str(loose), str(picked[0]), "-o", str(tmp_path / "p2.csv")]) == 0
    again = _predictions(tmp_path / "p2.csv")
    assert [int(r["label"]) for r in again] == [per_file[f.name] for f in picked] + [per_file[picked[0].name]]


def test_predict_reads_through_a_holdout_source(tmp_path):
    """A run on a held-out image folder (its test split set aside) predicts new files by its class names."""
    root = D.image_folder(tmp_path / "wine", n_per_class=9, classes=WINES)
    inner = {"kind": "image_folder", "params": {"root": str(root), "size": [12, 12]}}
    result = run(config_from_dict(_config(tmp_path, {"wine": {"kind": "holdout", "params": {"source": inner, "fraction": 0.3}}})),
                 progress=lambda _: None)
    picked = sorted(root.rglob("*.png"))[::9]
    assert main(["predict", str(result.run_dir), *map(str, picked), "-o", str(tmp_path / "held.csv")]) == 0
    rows = _predictions(tmp_path / "held.csv")
    assert [Path(r["file"]) for r in rows] == picked and {r["class"] for r in rows} <= set(WINES)
    assert sum(r["class"] == Path(r["file"]).parent.name for r in rows) >= 2  # better than chance on 4 classes


def _direct_predictions(run_dir: Path, root: Path) -> dict[str, int]:
    """The final model (from the checkpoint) on the stream's test datasets, each sample named by its file: the
    k-th test sample of a class is the k-th file of its test folder (the source lists files sorted, and an
    experience keeps that order)."""
    import torch
    from torch.utils.data import DataLoader

    from lifelong_moe.checkpointing import load_checkpoint
    from lifelong_moe.config import load_config
    from lifelong_moe.features import build_experiment_stream
    from lifelong_moe.preparation import build_model
    from lifelong_moe.run_state import restore_model

    cfg = load_config(run_dir / "config.yaml")
    stream = build_experiment_stream(cfg, progress=lambda _: None)
    model = build_model(cfg, stream)
    restore_model(model, load_checkpoint(run_dir))
    model.eval()
    label_of = {name: label for label, name in stream.class_names.items()}
    files: dict[int, list[str]] = {}
    for f in sorted(p for p in (root / "test").rglob("*") if p.is_file()):
        files.setdefault(label_of[f.parent.name], []).append(f.name)
    out = {}
    for exp in stream.test_stream:
        x, y, _ = next(iter(DataLoader(exp.dataset, batch_size=len(exp.dataset), collate_fn=exp.dataset.collate_fn)))
        with torch.no_grad():
            predicted = model.evaluation_step(x, None).logits.argmax(1).tolist()
        taken: dict[int, int] = {}
        for true, label in zip(y.tolist(), predicted):
            out[files[true][taken.get(true, 0)]] = label
            taken[true] = taken.get(true, 0) + 1
    return out


def test_predict_through_a_pretrained_encoder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    root = D.image_folder(tmp_path / "wine", n_per_class=6, classes=WINES, split_dirs=True)
    pretrained = {"image": {"kind": "timm", "name": "test_vit", "weights": str(D.timm_weights(tmp_path / "vit.safetensors")),
                            "params": {"image_size": [32, 32], "model_args": {"img_size": 32}}}}
    result = run(config_from_dict(_config(tmp_path, {"wine": {"kind": "image_folder", "params": {"root": str(root), "size": [16, 16]}}},
                                          pretrained)), progress=lambda _: None)
    _check_same_as_evaluation(result.run_dir, root / "test", tmp_path / "pred.csv", capsys)


def test_predict_on_audio_standardizes_with_the_training_statistics(tmp_path, capsys):
    root = D.audio_folder(tmp_path / "sounds", n_per_class=6, classes=WINES)
    train, test = tmp_path / "split" / "train", tmp_path / "split" / "test"
    for f in sorted(root.rglob("*.*")):  # the layout with a given split, so the test files are known
        dest = (test if int(f.stem.split("_")[1]) % 3 == 0 else train) / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    sources = {"wine": {"kind": "audio_folder", "params": {"root": str(tmp_path / "split"), "sample_rate": 8000, "duration": 0.3}}}
    result = run(config_from_dict(_config(tmp_path, sources)), progress=lambda _: None)
    prepared = json.loads((result.run_dir / "preparation.json").read_text())["preparation"]["audio"]
    assert len(prepared["mean"]) == len(prepared["std"]) == 40  # one per mel band, from the training split
    rows = _predictions_for(result.run_dir, test, tmp_path, capsys)
    assert {r["modality"] for r in rows} == {"audio"}


def _predictions_for(run_dir: Path, folder: Path, tmp_path: Path, capsys: Any) -> list[dict[str, str]]:
    out = tmp_path / "audio.csv"
    assert main(["predict", str(run_dir), str(folder), "-o", str(out)]) == 0
    rows = _predictions(out)
    res = json.loads((run_dir / "results.json").read_text())
    np.testing.assert_array_equal(_confusion(rows, res["class_names"]), np.asarray(res["per_class"][-1]["confusion_matrix"]))
    return rows


@pytest.mark.parametrize("args, expected", [
    (lambda d, t: ["predict", str(t / "nowhere"), str(t)], "predict: no run directory at"),
    (lambda d, t: ["predict", str(d), str(t / "missing.png")], "predict: no such file or folder"),
    (lambda d, t: ["predict", str(d), str(t / "note.txt")], "predict: "),
    (lambda d, t: ["predict", str(d), str(t), "--modality", "audio"], "--modality: the run has no modality 'audio'"),
])
def test_predict_errors_are_one_line(tmp_path, capsys, args, expected):
    from battery import one_line_error

    root = D.image_folder(tmp_path / "wine", n_per_class=3, classes=WINES[:2])
    result = run(config_from_dict({**_config(tmp_path, {"wine": {"kind": "image_folder", "params": {"root": str(root), "size": [8, 8]}}}),
                                   "train": {"epochs": 1, "batch_size": 8}}), progress=lambda _: None)
    (tmp_path / "note.txt").write_text("not an image")
    one_line_error(main, args(result.run_dir, tmp_path), capsys, expected)


def test_predict_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    from battery import one_line_error

    root = D.image_folder(tmp_path / "wine", n_per_class=3, classes=WINES[:2])
    result = run(config_from_dict({**_config(tmp_path, {"wine": {"kind": "image_folder", "params": {"root": str(root), "size": [8, 8]}}}),
                                   "train": {"epochs": 1, "batch_size": 8}}), progress=lambda _: None)
    image = next(root.rglob("*.png"))
    for target in (result.run_dir / "results.json", result.run_dir / "checkpoint.pt", image):
        before = target.read_bytes()
        one_line_error(main, ["predict", str(result.run_dir), str(image), "-o", str(target)], capsys, "predict: --output: ")
        assert target.read_bytes() == before
    out = tmp_path / "predictions.csv"
    out.touch()  # an empty file holds nothing to lose
    for _ in range(2):  # a CSV of its own is replaced
        assert main(["predict", str(result.run_dir), str(image), "-o", str(out)]) == 0
        assert len(_predictions(out)) == 1
