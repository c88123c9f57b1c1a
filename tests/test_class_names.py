"""Class names end to end: experiences list classes by the names their folders give them, `validate` prints the
label -> name mapping, the run stores it (results.json, classes.csv), and per-class accuracy, the confusion
matrix, tables, TensorBoard and the report use the names. Unknown names are one line with a suggestion."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datafiles as D
from battery import one_line_error
from conftest import tiny_config, write_yaml
from lifelong_moe import config_from_dict, run
from lifelong_moe.cli import main
from lifelong_moe.errors import ConfigError

WINES = ("barbera", "nebbiolo", "dolcetto", "grignolino")


def wine_config(tmp_path: Path, **experiences: Any) -> dict[str, Any]:
    root = tmp_path / "wine"
    if not root.exists():
        D.image_folder(root, n_per_class=9, classes=WINES, split_dirs=True)
    cfg = tiny_config(tmp_path / "runs", model={"name": "moe"})
    cfg["name"] = "wine"
    cfg["stream"] = {"scenario": "class_incremental",
                     "sources": {"wine": {"kind": "image_folder", "params": {"root": str(root), "size": [12, 12], "cache": False}}},
                     "experiences": [{"source": "wine", "classes": ["barbera", "nebbiolo"], "name": "reds"},
                                     {"source": "wine", "classes": ["dolcetto", "grignolino"], "name": "others"}]}
    cfg["train"] = {"epochs": 4, "batch_size": 8, "lr": 0.01}
    cfg["trainer"]["cpu_threads"] = 1
    cfg.update(experiences)
    return cfg


def test_classes_by_name_resolve_to_the_folders_labels(tmp_path):
    from lifelong_moe.features import build_experiment_stream

    stream = build_experiment_stream(config_from_dict(wine_config(tmp_path)), progress=lambda _: None)
    # sorted names are numbered: barbera 0, dolcetto 1, grignolino 2, nebbiolo 3
    assert [e.classes for e in stream.experiences] == [[0, 3], [1, 2]]
    assert stream.class_names == {0: "barbera", 1: "dolcetto", 2: "grignolino", 3: "nebbiolo"}
    assert "[barbera, nebbiolo] / image" in stream.describe()
    assert stream.describe_classes() == "classes (label: name): 0: barbera, 1: dolcetto, 2: grignolino, 3: nebbiolo"
    # names and labels mix; a split rule's class order takes names too
    cfg = wine_config(tmp_path)
    cfg["stream"]["experiences"][0]["classes"] = [0, "nebbiolo"]
    assert build_experiment_stream(config_from_dict(cfg), progress=lambda _: None).experiences[0].classes == [0, 3]
    cfg["stream"].pop("experiences")
    cfg["stream"]["split"] = {"source": "wine", "n_experiences": 2, "class_order": ["nebbiolo", "barbera", "grignolino", "dolcetto"]}
    assert [e.classes for e in build_experiment_stream(config_from_dict(cfg), progress=lambda _: None).experiences] == [[0, 3], [1, 2]]


def test_a_class_name_matches_in_either_unicode_form(tmp_path):
    """A folder named 'rosé' on one system and the name typed decomposed ('rose' + U+0301) on another are one name:
    the config's name finds the folder's class, and the stream shows it composed (NFC)."""
    from lifelong_moe.features import build_experiment_stream

    composed, decomposed = "ros\u00e9", "rose\u0301"
    root = tmp_path / "wine"
    D.image_folder(root, n_per_class=9, classes=(decomposed, "barbera", "dolcetto", "grignolino"), split_dirs=True)
    cfg = wine_config(tmp_path)
    cfg["stream"]["experiences"][0]["classes"] = ["barbera", composed]
    stream = build_experiment_stream(config_from_dict(cfg), progress=lambda _: None)
    assert stream.class_names[stream.experiences[0].classes[1]] == composed


@pytest.mark.parametrize("classes, expected", [
    (["barbera", "nebiolo"], "stream.experiences[0].classes: source 'wine' has no class named 'nebiolo' (asked for by experience "
                             "'reds') (did you mean 'nebbiolo'?); its classes: barbera, dolcetto, grignolino, nebbiolo"),
    (["barbera", 1.5], "stream.experiences[0].classes"),
])
def test_an_unknown_class_name_is_one_line(tmp_path, capsys, classes, expected):
    cfg = wine_config(tmp_path)
    cfg["stream"]["experiences"][0]["classes"] = classes
    line = one_line_error(main, ["validate", str(write_yaml(tmp_path / "c.yaml", cfg))], capsys, expected)
    assert "\n" not in line.strip()


def test_a_name_for_a_source_without_names_is_refused(tiny):
    from lifelong_moe.features import build_experiment_stream

    tiny["stream"]["experiences"] = [{"source": "syn", "classes": ["cat"]}]
    tiny["stream"].pop("split")
    with pytest.raises(ConfigError, match=r"stream.experiences\[0\].classes: source 'syn' has no class names, so 'cat' names no class"):
        build_experiment_stream(config_from_dict(tiny), progress=lambda _: None)


def test_validate_prints_the_mapping(tmp_path, capsys):
    assert main(["validate", str(write_yaml(tmp_path / "c.yaml", wine_config(tmp_path)))]) == 0
    out = capsys.readouterr().out
    assert "classes (label: name): 0: barbera, 1: dolcetto, 2: grignolino, 3: nebbiolo" in out
    assert "reds           wine                  0" in out and "[barbera, nebbiolo] / image" in out


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("wine")
    return run(config_from_dict(wine_config(tmp)), progress=lambda _: None)


def test_the_run_stores_names_per_class_accuracy_and_confusion(wine_run):
    res = json.loads((wine_run.run_dir / "results.json").read_text())
    assert res["class_names"] == ["barbera", "dolcetto", "grignolino", "nebbiolo"]
    assert [e["class_names"] for e in res["experiences"]] == [["barbera", "nebbiolo"], ["dolcetto", "grignolino"]]
    with open(wine_run.run_dir / "classes.csv") as fh:
        assert list(csv.reader(fh)) == [["label", "class"], ["0", "barbera"], ["1", "dolcetto"], ["2", "grignolino"], ["3", "nebbiolo"]]
    assert len(res["per_class"]) == 2
    sizes = [e["n_test"] for e in res["experiences"]]
    R = np.asarray(res["accuracy_matrix"])
    for i, record in enumerate(res["per_class"]):
        C = np.asarray(record["confusion_matrix"])
        assert C.shape == (4, 4) and C.sum() == sum(sizes)  # every test sample of every experience, once
        assert record["support"] == C.sum(1).tolist() == [3, 3, 3, 3]
        np.testing.assert_allclose(np.trace(C) / C.sum(), np.average(R[i], weights=sizes))  # the same evaluation as R
        for c in range(4):
            assert record["accuracy"][c] == pytest.approx(C[c, c] / C[c].sum())
    # after the first experience, the classes not yet seen cannot be predicted
    assert np.asarray(res["per_class"][0]["confusion_matrix"])[:, [1, 2]].sum() == 0
    with open(wine_run.run_dir / "class_accuracy.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["label", "class", "test_samples", "after_reds", "after_others"]
    assert [r[1] for r in rows[1:]] == ["barbera", "dolcetto", "grignolino", "nebbiolo"]
    assert float(rows[2][3]) == 0.0  # dolcetto before it was trained
    for name in ("confusion_matrix.png", "class_accuracy.png"):
        assert (wine_run.run_dir / name).stat().st_size > 5000


def test_per_class_accuracy_equals_torchmetrics(wine_run):
    """The evaluator's per-class numbers are torchmetrics' MulticlassAccuracy(average=None) on the same predictions."""
    import torch
    from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

    from lifelong_moe.evaluation.measure import class_record

    preds, target = torch.tensor([0, 1, 1, 2, 2, 2, 0]), torch.tensor([0, 1, 2, 2, 2, 0, 0])
    confusion = MulticlassConfusionMatrix(num_classes=4)(preds, target)
    record = class_record(confusion)
    expected = MulticlassAccuracy(num_classes=4, average=None)(preds, target).tolist()
    assert record["accuracy"][:3] == pytest.approx(expected[:3]) and record["accuracy"][3] is None  # class 3: no samples
    assert record["support"] == [3, 1, 3, 0]


def test_tensorboard_and_the_report_use_the_names(wine_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lifelong_moe.reporting.report import write_report

    tags = set()
    for event_file in wine_run.run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        tags |= set(acc.Tags()["scalars"]) | set(acc.Tags()["images"])
    assert {f"class_accuracy/{n}" for n in WINES} <= tags and "confusion_matrix" in tags
    page = write_report(wine_run.run_dir).read_text()
    for name in WINES:
        assert f"<td class=\"name\">{name}</td>" in page  # the per-class table and the mapping
    assert "barbera, nebbiolo" in page  # the experiences table


def test_holdout_keeps_its_sources_class_names(tmp_path: Path) -> None:
    """A held-out CSV source still names its classes: experiences may list them by name, and the stream shows them."""
    from lifelong_moe import config_from_dict
    from lifelong_moe.features import build_experiment_stream

    table = tmp_path / "t.csv"
    table.write_text("x,label\n" + "".join(f"{i % 3 + 0.01 * i},{['cat', 'dog', 'emu'][i % 3]}\n" for i in range(60)))
    cfg = {"name": "held", "seed": 0, "output": {"root": str(tmp_path / "runs")},
           "stream": {"scenario": "class_incremental",
                      "sources": {"t": {"kind": "holdout", "params": {"source": {"kind": "csv", "params": {"path": str(table)}},
                                                                      "fraction": 0.25}}},
                      "split": {"source": "t", "n_experiences": 3, "class_order": ["emu", "dog", "cat"]}},
           "model": {"name": "stats"}}
    stream = build_experiment_stream(config_from_dict(cfg), progress=lambda _: None)
    assert stream.class_names == {0: "cat", 1: "dog", 2: "emu"}
    assert [e.classes for e in stream.experiences] == [[2], [1], [0]]
