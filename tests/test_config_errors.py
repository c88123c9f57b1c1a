"""Bad configs: each gives a one-line error naming the key path or file, exit code 2, and no traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_config, write_yaml
from lifelong_moe.cli import main


def _set(cfg, dotted, value):
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    node[last] = value
    return cfg


def _explicit(cfg, experiences):
    cfg["stream"].pop("split")
    cfg["stream"]["experiences"] = experiences
    return cfg


CASES = [
    ("unknown top-level key", lambda c: _set(c, "trian", {"epochs": 1}), "trian: Key 'trian' not in 'ExperimentConfig'"),
    ("wrong type", lambda c: _set(c, "train.epochs", "many"), "train.epochs: Value 'many' of type 'str' could not be converted to Integer"),
    ("unknown scenario", lambda c: _set(c, "stream.scenario", "class_inc"), "stream.scenario: Invalid value 'class_inc'"),
    ("unknown source kind", lambda c: _set(c, "stream.sources.syn.kind", "imagenet"), "stream.sources.syn.kind: unknown data source 'imagenet'"),
    ("unknown source param", lambda c: _set(c, "stream.sources.syn.params.n_clases", 3), "stream.sources.syn.params.n_clases: Key 'n_clases' not in 'SyntheticParams'"),
    ("wrongly typed source param", lambda c: _set(c, "stream.sources.syn.params.dim", "wide"), "stream.sources.syn.params.dim: Value 'wide' of type 'str' could not be converted to Integer"),
    ("class the source lacks", lambda c: _explicit(c, [{"source": "syn", "classes": [0, 9]}]), "stream.experiences[0].classes: source 'syn' has no class [9]"),
    ("modality the source lacks", lambda c: _explicit(c, [{"source": "syn", "modalities": ["m0", "audio"]}]), "stream.experiences[0].modalities: source 'syn' has no modality ['audio']"),
    ("no experiences", lambda c: _explicit(c, []), "stream.experiences: the stream has no experiences"),
    ("unknown source name", lambda c: _explicit(c, [{"source": "nope"}]), "stream.experiences[0].source: unknown source 'nope'; defined in stream.sources: syn"),
    ("task label in class-incremental", lambda c: _explicit(c, [{"source": "syn", "classes": [0]}, {"source": "syn", "classes": [1], "task_label": 1}]), "stream.experiences[1].task_label: class_incremental streams carry no task labels"),
    ("too many experiences", lambda c: _set(c, "stream.split.n_experiences", 9), "stream.split.n_experiences: must lie in 1..4"),
    ("unknown model", lambda c: _set(c, "model.name", "transformer9000"), "model.name: unknown model 'transformer9000'"),
    ("unknown model param", lambda c: _set(c, "model.params.hidden", 8), "model.params.hidden: Key 'hidden' not in 'MultimodalMLPParams'"),
    ("missing rate of one", lambda c: _explicit(c, [{"source": "syn", "test_missing_rate": {"m0": 1.0}}]), "stream.experiences[0].test_missing_rate.m0: missing rate must lie in [0, 1), got 1.0"),
    ("both split and experiences", lambda c: _set(c, "stream.experiences", [{"source": "syn"}]), "stream: give either `experiences` or `split`, not both"),
    ("bad optimizer", lambda c: _set(c, "train.optimizer", "adamax"), "train.optimizer: unknown optimizer 'adamax'"),
    ("too large a sample size", lambda c: _explicit(c, [{"source": "syn", "classes": [0], "train_size": 500}]), "stream.experiences[0].train_size: asks for 500 samples but only 40 exist"),
    ("domain-incremental with different classes", lambda c: _explicit(_set(c, "stream.scenario", "domain_incremental"), [{"source": "syn", "classes": [0, 1]}, {"source": "syn", "classes": [2, 3]}]), "stream.experiences[1].classes: domain_incremental experiences share their classes"),
    ("a name where a list of classes belongs", lambda c: _explicit(c, [{"source": "syn", "classes": "cat"}]), "stream.experiences[0].classes: expected a list, got a string 'cat'; write [cat]"),
    ("a number where a list of classes belongs", lambda c: _explicit(c, [{"source": "syn", "classes": 3}]), "stream.experiences[0].classes: expected a list, got a number 3; write [3]"),
    ("a name where a list of modalities belongs", lambda c: _explicit(c, [{"source": "syn", "modalities": "note"}]), "stream.experiences[0].modalities: expected a list, got a string 'note'; write [note]"),
    ("a mapping where a list belongs", lambda c: _set(c, "imports", {"a": 1}), "imports: expected a list, got a mapping"),
    ("null classes in an experience", lambda c: _explicit(c, [{"source": "syn", "classes": None}]), "stream.experiences[0].classes: must not be null; expected a list"),
]


@pytest.mark.parametrize("name,mutate,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_names_its_key(tmp_path, capsys, name, mutate, expected):
    path = write_yaml(tmp_path / "bad.yaml", mutate(tiny_config(tmp_path / "runs")))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lifelong-moe: error: ")
    assert expected in err, err
    assert "\n" not in err and "Traceback" not in err


TWO_EXPERIENCES = [{"source": "syn", "classes": [0, 1]}, {"source": "syn", "classes": [2, 3]}]
OVERRIDES = [
    ("a number where a list belongs", ["stream.experiences.0.classes=3"], "stream.experiences[0].classes: expected a list, got a number 3; write [3]"),
    ("a new pretrained encoder without weights", ["pretrained.tabular.kind=timm"], "pretrained.tabular.weights: missing mandatory value"),
    ("a new pretrained encoder without a kind", ["pretrained.tabular.weights=w.pt"], "pretrained.tabular.kind: missing mandatory value"),
    ("an experience that does not exist", ["stream.experiences.5.name=x"],
     "stream.experiences[5]: no such item: the list has 2 items (indices 0..1, or -2..-1); to add items, give the whole list"),
    ("a missing rate that does not exist", ["modality_eval.missing_rates.4=0.5"], "modality_eval.missing_rates[4]: no such item: the list has 4 items"),
]


@pytest.mark.parametrize("name,overrides,expected", OVERRIDES, ids=[c[0] for c in OVERRIDES])
def test_bad_override_names_its_key(tmp_path, capsys, name, overrides, expected):
    path = write_yaml(tmp_path / "c.yaml", _explicit(tiny_config(tmp_path / "runs"), TWO_EXPERIENCES))
    assert main(["validate", str(path), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err, err
    assert "\n" not in err and "Traceback" not in err


def test_new_pretrained_encoder_by_overrides_reaches_the_encoder_checks(tmp_path, capsys):
    """Both keys of a new `pretrained.<modality>` given on the command line make a whole entry."""
    path = write_yaml(tmp_path / "c.yaml", tiny_config(tmp_path / "runs"))
    overrides = ["pretrained.m0.kind=timm", "pretrained.m0.name=vit_tiny_patch16_224", "pretrained.m0.weights=/nonexistent/w"]
    assert main(["validate", str(path), *overrides]) == 2
    assert "pretrained.m0: a timm encoder reads image modalities" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["yaml", "override"])
def test_devices_as_a_list_of_indices_reach_the_trainer(tmp_path, monkeypatch, how):
    """`trainer.devices: [0, 1]` (as the config reference documents) loads, and the Trainer gets the list."""
    from lifelong_moe import training
    from lifelong_moe.config import load_config

    cfg = tiny_config(tmp_path / "runs")
    if how == "yaml":
        cfg["trainer"]["devices"] = [0, 1]
    loaded = load_config(write_yaml(tmp_path / "c.yaml", cfg), ["trainer.devices=[0,1]"] if how == "override" else [])
    seen = {}
    monkeypatch.setattr(training.L, "Trainer", lambda **kwargs: seen.update(kwargs))
    training.make_trainer(loaded.trainer)
    assert seen["devices"] == [0, 1]


def test_an_override_may_count_list_items_from_the_end(tmp_path):
    from lifelong_moe.config import load_config

    cfg = tiny_config(tmp_path)
    cfg["stream"].pop("split")
    cfg["stream"]["experiences"] = [{"source": "syn", "classes": [0, 1]}, {"source": "syn", "classes": [2, 3]}]
    loaded = load_config(write_yaml(tmp_path / "c.yaml", cfg), ["stream.experiences.-1.classes=[3]"])
    assert [list(e.classes) for e in loaded.stream.experiences] == [[0, 1], [3]]


def test_word_vocabulary_must_hold_a_word(tmp_path, capsys):
    """A word tokenizer of 2 ids (padding and unknown) or fewer would make every word unknown."""
    from datafiles import csv_table

    cfg = tiny_config(tmp_path / "runs")
    cfg["stream"]["sources"] = {"mine": {"kind": "csv", "params": {"path": str(csv_table(tmp_path / "t.csv")), "text": ["note"],
                                                                   "ignore": ["id"], "tokenizer": {"vocab_size": 2}}}}
    cfg["stream"]["split"]["source"] = "mine"
    path = write_yaml(tmp_path / "c.yaml", cfg)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("lifelong-moe: error: stream.sources.mine.params.tokenizer.vocab_size: must be at least 3 (padding, unknown "
                   "and one word), got 2"), err
    assert main(["validate", str(path), "stream.sources.mine.params.tokenizer.vocab_size=3"]) == 0


def test_missing_data_file_names_the_file(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "runs")
    cfg["stream"]["sources"] = {"mine": {"kind": "npz", "params": {"train": str(tmp_path / "nope.npz"), "test": str(tmp_path / "t.npz")}}}
    cfg["stream"]["split"]["source"] = "mine"
    assert main(["validate", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 2
    err = capsys.readouterr().err.strip()
    assert f"stream.sources.mine.params.train: file not found: {tmp_path / 'nope.npz'}" in err


def test_empty_test_split_is_reported(tmp_path, capsys):
    np.savez(tmp_path / "train.npz", x=np.zeros((6, 3), np.float32), labels=np.array([0, 0, 1, 1, 2, 2]))
    np.savez(tmp_path / "test.npz", x=np.zeros((2, 3), np.float32), labels=np.array([0, 1]))
    cfg = tiny_config(tmp_path / "runs")
    cfg["stream"]["sources"] = {"mine": {"kind": "npz", "params": {"train": str(tmp_path / "train.npz"), "test": str(tmp_path / "test.npz")}}}
    cfg["stream"].pop("split")
    cfg["stream"]["experiences"] = [{"source": "mine", "classes": [0, 1]}, {"source": "mine", "classes": [2]}]
    assert main(["validate", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 2
    assert "stream.experiences[1]: the test split is empty" in capsys.readouterr().err


def test_corrupt_data_file_and_nan_sample_are_named(tmp_path, capsys):
    (tmp_path / "train.npz").write_bytes(b"not a zip file at all")
    bad = np.ones((4, 3), np.float32)
    bad[2, 1] = np.nan
    np.savez(tmp_path / "test.npz", x=bad, labels=np.array([0, 1, 0, 1]))
    cfg = tiny_config(tmp_path / "runs")
    cfg["stream"]["sources"] = {"mine": {"kind": "npz", "params": {"train": str(tmp_path / "test.npz"), "test": str(tmp_path / "train.npz")}}}
    cfg["stream"]["split"]["source"] = "mine"
    cfg["stream"]["split"]["n_experiences"] = 2
    assert main(["validate", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 2
    assert "test.npz: sample 2 of modality 'x' is NaN or infinite" in capsys.readouterr().err
    cfg["stream"]["sources"]["mine"]["params"]["train"] = str(tmp_path / "train.npz")
    assert main(["validate", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 2
    assert "train.npz: not a readable .npz file" in capsys.readouterr().err


def test_bad_override_and_bad_yaml(tmp_path, capsys):
    good = write_yaml(tmp_path / "good.yaml", tiny_config(tmp_path / "runs"))
    assert main(["validate", str(good), "train.lr=-1"]) == 2
    assert "train.lr: must be positive, got -1.0" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nstream: [unclosed\n")
    assert main(["validate", str(broken)]) == 2
    assert f"{broken}: invalid YAML at line" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: config file not found" in capsys.readouterr().err


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    cfg = tiny_config(tmp_path / "runs")
    cfg["train"]["batch_size"] = 0
    path = write_yaml(tmp_path / "bad.yaml", cfg)
    proc = subprocess.run([sys.executable, "-m", "lifelong_moe.cli", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["lifelong-moe: error: train.batch_size: must be at least 1, got 0"]
    assert not (tmp_path / "runs").exists()  # nothing was created for a rejected config
