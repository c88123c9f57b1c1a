"""Bad-input battery, config family: files, YAML, overrides and values. Each case goes through the real CLI
entry point twice, `validate` and `run`: both refuse it with the same single line (so validate never
approves what run rejects), exit code 2, nothing written, the earlier run byte-identical."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from battery import Earlier, one_line_error, write_config
from conftest import TINY_STREAM
from lifelong_moe.cli import main

Case = tuple[str, Callable[[Earlier, Path], list[str]], tuple[str, ...]]


def setting(dotted: str, value: Any) -> Callable[[Earlier, Path], list[str]]:
    """A tiny config with one key path set (list items by index)."""

    def build(earlier: Earlier, tmp: Path) -> list[str]:
        cfg = earlier.config()
        *parents, last = dotted.split(".")
        node: Any = cfg
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[last] = value
        return [str(write_config(tmp / "bad.yaml", cfg))]

    return build


def explicit(*experiences: dict[str, Any], scenario: str = "class_incremental") -> Callable[[Earlier, Path], list[str]]:
    def build(earlier: Earlier, tmp: Path) -> list[str]:
        cfg = earlier.config()
        cfg["stream"].pop("split")
        cfg["stream"]["scenario"] = scenario
        cfg["stream"]["experiences"] = list(experiences)
        return [str(write_config(tmp / "bad.yaml", cfg))]

    return build


def raw_file(content: bytes | str) -> Callable[[Earlier, Path], list[str]]:
    def build(earlier: Earlier, tmp: Path) -> list[str]:
        path = tmp / "bad.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return [str(path)]

    return build


def overrides(*items: str) -> Callable[[Earlier, Path], list[str]]:
    def build(earlier: Earlier, tmp: Path) -> list[str]:
        return [str(write_config(tmp / "good.yaml", earlier.config())), *items]

    return build


def reference(content: str | None) -> Callable[[Earlier, Path], list[str]]:
    """reference_results pointing at a file with `content` (None: at a directory)."""

    def build(earlier: Earlier, tmp: Path) -> list[str]:
        ref = tmp / "ref.json"
        if content is None:
            ref.mkdir()
        else:
            ref.write_text(content)
        cfg = earlier.config(reference_results=str(ref))
        return [str(write_config(tmp / "bad.yaml", cfg))]

    return build


def _good_text(earlier: Earlier) -> str:
    return json.dumps(earlier.config())


def _prefixed(text: str) -> Callable[[Earlier, Path], list[str]]:
    """The good config (as JSON, which is YAML) followed by more YAML lines."""

    def build(earlier: Earlier, tmp: Path) -> list[str]:
        import yaml

        path = tmp / "bad.yaml"
        path.write_text(yaml.safe_dump(earlier.config(), sort_keys=False) + text)
        return [str(path)]

    return build


def directory(earlier: Earlier, tmp: Path) -> list[str]:
    (tmp / "cfg.yaml").mkdir()
    return [str(tmp / "cfg.yaml")]


MARKER = Path("/tmp/lifelong-moe-battery-yaml-payload-ran")

CASES: list[Case] = [
    # --- the file itself
    ("not utf-8", raw_file("name: caf\u00e9\n".encode("latin-1")), ("bad.yaml: not UTF-8 text (byte 9 is 0xe9)",)),
    ("a directory", directory, ("cfg.yaml: is a directory",)),
    ("empty path", lambda e, t: [""], ("config: the config path is empty",)),
    ("NUL in the path", lambda e, t: [str(t / "a\0b.yaml")], ("config:", "is not a path (it holds a NUL character)")),
    ("top level is a list", raw_file("- name: x\n- seed: 1\n"), ("bad.yaml: the top level must be a mapping", "a list")),
    ("top level is a number", raw_file("42\n"), ("the top level must be a mapping",)),
    ("empty file: no sources", raw_file(""), ("stream.sources: no data sources defined",)),
    ("python object tag", raw_file(f"name: !!python/object/apply:os.system ['touch {MARKER}']\n"),
     ("bad.yaml: invalid YAML at line 1", "python/object/apply:os.system")),
    ("unclosed bracket", raw_file("name: x\nstream: [unclosed\n"), ("bad.yaml: invalid YAML at line",)),
    ("tab indentation", raw_file("train:\n\tepochs: 1\n"), ("bad.yaml: invalid YAML at line 2",)),
    ("NUL byte", raw_file("name: a\x00b\n"), ("bad.yaml: invalid YAML",)),
    ("duplicate key", _prefixed("train: {epochs: 2}\n"), ("bad.yaml: invalid YAML at line", "duplicate key 'train'")),
    ("alias", _prefixed("base: &b {epochs: 1}\n"), ("anchor '&b' is not supported",)),
    ("merge key with alias", raw_file("defaults: &d {epochs: 1}\ntrain:\n  <<: *d\n"), ("anchor '&d' is not supported",)),
    ("integer key at the top", raw_file("1: x\n"), ("config keys must be names",)),
    ("unhashable key", raw_file("? [a, b]\n: x\n"), ("bad.yaml: invalid YAML",)),
    # --- keys and types
    ("unknown top-level key", setting("trian", {"epochs": 1}), ("trian: Key 'trian' not in 'ExperimentConfig'",)),
    ("look-alike unicode key", setting("tr\u0430in", {"epochs": 1}), ("tr\u0430in: Key",)),
    ("section given a number", setting("train", 5), ("train: expected a mapping of settings, got a number",)),
    ("experience given a string", explicit("syn"), ("stream.experiences[0]: expected a mapping of settings, got a string",)),
    ("source given a list", setting("stream.sources.syn", ["synthetic"]), ("stream.sources.syn: expected a mapping of settings, got a list",)),
    ("epochs as text", setting("train.epochs", "many"), ("train.epochs: Value 'many' of type 'str' could not be converted to Integer",)),
    ("seed as a list", setting("seed", [1, 2]), ("seed",)),
    ("lr as text", setting("train.lr", "fast"), ("train.lr: Value 'fast'",)),
    ("plots as a sentence", setting("output.plots", "yes please"), ("output.plots",)),
    ("evaluate_untrained as maybe", setting("evaluate_untrained", "maybe"), ("evaluate_untrained",)),
    ("missing rates as text", setting("modality_eval.missing_rates", "0.5"), ("modality_eval.missing_rates",)),
    ("stream is null", setting("stream", None), ("stream",)),
    ("interpolation to nothing", setting("name", "${nope}"), ("name",)),
    ("interpolation to itself", setting("name", "${name}"), ("name",)),
    ("unset environment variable", setting("name", "${oc.env:LIFELONG_MOE_SURELY_UNSET}"), ("name",)),
    # --- values
    ("negative seed", setting("seed", -1), ("seed: must be at least 0, got -1",)),
    ("seed beyond numpy", setting("seed", 2**40), ("seed: must be at most 4294967295",)),
    ("infinite lr", setting("train.lr", float("inf")), ("train.lr: must be a finite number, got inf",)),
    ("NaN lr", setting("train.lr", float("nan")), ("train.lr: must be a finite number, got nan",)),
    ("zero lr", setting("train.lr", 0.0), ("train.lr: must be positive, got 0.0",)),
    ("negative weight decay", setting("train.weight_decay", -0.1), ("train.weight_decay: must be a finite number >= 0, got -0.1",)),
    ("NaN weight decay", setting("train.weight_decay", float("nan")), ("train.weight_decay: must be a finite number >= 0, got nan",)),
    ("negative num_workers", setting("train.num_workers", -1), ("train.num_workers: must be at least 0, got -1",)),
    ("zero epochs", setting("train.epochs", 0), ("train.epochs: must be at least 1, got 0",)),
    ("negative batch size", setting("train.batch_size", -5), ("train.batch_size: must be at least 1, got -5",)),
    ("zero eval batch size", setting("train.eval_batch_size", 0), ("train.eval_batch_size: must be at least 1, got 0",)),
    ("unknown optimizer", setting("train.optimizer", "adamax"), ("train.optimizer: unknown optimizer 'adamax'",)),
    ("modality dropout of one", setting("train.modality_dropout", 1.0), ("train.modality_dropout: must lie in [0, 1), got 1.0",)),
    ("NaN modality dropout", setting("train.modality_dropout", float("nan")), ("train.modality_dropout: must lie in [0, 1), got nan",)),
    ("missing rate above one", setting("modality_eval.missing_rates", [0.5, 1.5]), ("modality_eval.missing_rates[1]: must lie in [0, 1), got 1.5",)),
    ("unknown precision", setting("trainer.precision", "17-mixed"), ("trainer.precision: unknown precision '17-mixed'",)),
    ("casting precision", setting("trainer.precision", "64-true"), ("trainer.precision: '64-true' casts every parameter and buffer",)),
    ("unknown accelerator", setting("trainer.accelerator", "quantum"), ("trainer.accelerator: unknown accelerator 'quantum'",)),
    ("devices as a word", setting("trainer.devices", "two"), ("trainer.devices: expected auto, a count",)),
    ("zero devices", setting("trainer.devices", "0"), ("trainer.devices: a device count must lie in 1..1024",)),
    ("repeated device", setting("trainer.devices", "[0,0]"), ("trainer.devices: device indices must be distinct",)),
    ("device indices on the CPU", setting("trainer.devices", [0, 1]), ("trainer.devices: Lightning refuses these settings: `devices` selected with `CPUAccelerator`",)),
    ("zero nodes", setting("trainer.num_nodes", 0), ("trainer.num_nodes: must be at least 1, got 0",)),
    ("zero logging interval", setting("trainer.log_every_n_steps", 0), ("trainer.log_every_n_steps: must be at least 1, got 0",)),
    ("empty strategy", setting("trainer.strategy", ""), ("trainer.strategy: must be a Lightning strategy name",)),
    ("unknown Lightning strategy", setting("trainer.strategy", "warp_drive"), ("trainer.strategy: Lightning refuses these settings",)),
    ("unknown model", setting("model.name", "transformer9000"), ("model.name: unknown model 'transformer9000'",)),
    ("unknown strategy", setting("strategy.name", "forget_nothing"), ("strategy.name: unknown strategy 'forget_nothing'",)),
    ("model param of the wrong type", setting("model.params.embed_dim", "wide"), ("model.params.embed_dim: Value 'wide'",)),
    ("NaN strategy param", lambda e, t: [str(write_config(t / "bad.yaml", {**e.config(), "strategy": {"name": "naive"},
                                                                         "model": {"name": "moe", "params": {"statistics": {"floors": [0.0, float("nan")]}}}}))],
     ("model.params.statistics.floors[1]: must be a finite number, got nan",)),
    ("MoE with a replay strategy", lambda e, t: [str(write_config(t / "bad.yaml", {**e.config(), "model": {"name": "moe"},
                                                                                 "strategy": {"name": "replay"}}))],
     ("strategy.name: 'replay' trains on more than the current experience's data",)),
    ("validation fraction above one half", setting("train.validation_fraction", 0.9),
     ("train.validation_fraction: must lie in [0, 0.5], got 0.9",)),
    ("NaN validation fraction", setting("train.validation_fraction", float("nan")), ("train.validation_fraction: must lie in [0, 0.5], got nan",)),
    ("negative validation fraction", setting("train.validation_fraction", -0.1), ("train.validation_fraction: must lie in [0, 0.5], got -0.1",)),
    # --- pretrained encoders
    ("pretrained section a list", setting("pretrained", ["timm"]), ("pretrained: expected a mapping, got a list",)),
    ("experiences as a number", setting("stream.experiences", 3), ("stream.experiences: expected a list of mappings of settings, got a number",)),
    ("model params as a list", setting("model.params", [1, 2]), ("model.params: expected a mapping, got a list",)),
    ("pretrained encoder a string", setting("pretrained", {"m0": "timm"}), ("pretrained.m0: expected a mapping of settings, got a string",)),
    ("pretrained unknown kind", setting("pretrained", {"m0": {"kind": "keras", "weights": "w.h5"}}), ("pretrained.m0.kind: unknown pretrained encoder 'keras'",)),
    ("pretrained without weights", setting("pretrained", {"m0": {"kind": "hf"}}), ("pretrained.m0.weights: missing mandatory value",)),
    ("pretrained batch of zero", setting("pretrained", {"m0": {"kind": "hf", "weights": "w", "batch_size": 0}}),
     ("pretrained.m0.batch_size: must be at least 1, got 0",)),
    ("pretrained on a quantum device", setting("pretrained", {"m0": {"kind": "hf", "weights": "w", "device": "qpu"}}),
     ("pretrained.m0.device: expected auto, cpu, cuda, cuda:N or mps; got 'qpu'",)),
    ("pretrained modality as a path", setting("pretrained", {"../m0": {"kind": "hf", "weights": "w"}}), ("pretrained.../m0: '../m0' cannot name a modality",)),
    ("pretrained for the mask", setting("pretrained", {"mask": {"kind": "hf", "weights": "w"}}), ("pretrained.mask: 'mask' is reserved",)),
    ("pretrained image encoder on a vector", setting("pretrained", {"m0": {"kind": "timm", "name": "vit_tiny_patch16_224", "weights": "/nonexistent/w"}}),
     ("pretrained.m0: a timm encoder reads image modalities; this one is tabular [8]",)),
    ("pretrained modality no source has", setting("pretrained", {"photo": {"kind": "timm", "name": "vit_tiny_patch16_224", "weights": "/nonexistent/w"}}),
     ("pretrained.photo: no source of the stream has a modality 'photo'",)),
    # --- reference results
    ("reference results missing", setting("reference_results", "/nonexistent/results.json"), ("reference_results: file not found: /nonexistent/results.json",)),
    ("reference results a directory", reference(None), ("reference_results:", "is a directory")),
    ("reference results a JSON list", reference("[[1, 0], [0, 1]]"), ("reference_results:", "no 'accuracy_matrix' in it")),
    ("reference results not JSON", reference("accuracy: high"), ("reference_results:", "not a readable results.json")),
    ("reference matrix of text", reference('{"accuracy_matrix": [["a", "b"], ["c", "d"]]}'), ("reference_results:", "not a matrix of numbers")),
    ("reference matrix of the wrong size", reference('{"accuracy_matrix": [[1.0]]}'), ("reference_results:", "this stream needs 2x2")),
    ("reference accuracies above one", reference('{"accuracy_matrix": [[5.0, 0], [0, 7.0]]}'), ("reference_results:", "accuracies in [0, 1]")),
    ("reference results deeply nested", reference("[" * 100_000 + "]" * 100_000), ("reference_results:", "not a readable results.json")),
    # --- the stream
    ("no experiences", explicit(), ("stream.experiences: the stream has no experiences",)),
    ("class the source lacks", explicit({"source": "syn", "classes": [0, 9]}), ("stream.experiences[0].classes: source 'syn' has no class [9]",)),
    ("negative class", explicit({"source": "syn", "classes": [-1]}), ("stream.experiences[0].classes: source 'syn' has no class [-1]",)),
    ("repeated class", explicit({"source": "syn", "classes": [1, 1]}), ("stream.experiences[0].classes: repeated class",)),
    ("a class twice in class_order", setting("stream.split", {"source": "syn", "n_experiences": 3, "class_order": [0, 0, 1]}),
     ("stream.split.class_order: class 0 appears twice; list each class once",)),
    ("two experiences of one name", explicit({"source": "syn", "classes": [0, 1], "name": "a"}, {"source": "syn", "classes": [2, 3], "name": "a"}),
     ("stream.experiences[1].name: 'a' also names stream.experiences[0]; give each experience its own name",)),
    ("a name that is another experience's default", explicit({"source": "syn", "classes": [0, 1]}, {"source": "syn", "classes": [2, 3], "name": "exp0"}),
     ("stream.experiences[1].name: 'exp0' also names stream.experiences[0]",)),
    ("a line break in a name", explicit({"source": "syn", "classes": [0, 1], "name": "a\nb"}, {"source": "syn", "classes": [2, 3]}),
     ("stream.experiences[0].name: 'a\\nb' holds a control character",)),
    ("a source name with a dot", setting("stream.sources", {"my.src": copy.deepcopy(TINY_STREAM["sources"]["syn"])}),
     ("stream.sources: 'my.src' cannot name a source (a name must not be empty or hold a '.')",)),
    ("a holdout fraction that leaves no training sample",
     setting("stream.sources.syn", {"kind": "holdout", "params": {"source": copy.deepcopy(TINY_STREAM["sources"]["syn"]), "fraction": 0.99}}),
     ("stream.sources.syn.params.fraction: 0.99 leaves class 0 with no training sample (it has 40)",)),
    ("zero train size", explicit({"source": "syn", "train_size": 0}), ("stream.experiences[0].train_size: must be positive, got 0",)),
    ("a train size below the class count", explicit({"source": "syn", "classes": [0, 1], "train_size": 1}),
     ("stream.experiences[0].train_size: 1 sample(s) cannot hold each of the experience's 2 classes [0, 1]",)),
    ("negative task label", explicit({"source": "syn", "classes": [0, 1], "task_label": -3}, {"source": "syn", "classes": [2, 3]},
                                     scenario="task_incremental"), ("stream.experiences[0].task_label: must lie in 0..9999, got -3",)),
    ("missing rate for an absent modality", explicit({"source": "syn", "modalities": ["m0"], "test_missing_rate": {"m1": 0.5}}),
     ("stream.experiences[0].test_missing_rate.m1: modality 'm1' is not in this experience",)),
    ("NaN missing rate", explicit({"source": "syn", "test_missing_rate": {"m0": float("nan")}}),
     ("stream.experiences[0].test_missing_rate.m0: missing rate must lie in [0, 1), got nan",)),
    ("zero experiences in a split", setting("stream.split.n_experiences", 0), ("stream.split.n_experiences: must be at least 1, got 0",)),
    ("more experiences than classes", setting("stream.split.n_experiences", 9), ("stream.split.n_experiences: must lie in 1..4 (classes available), got 9",)),
    ("unknown scenario", setting("stream.scenario", "class_inc"), ("stream.scenario: Invalid value 'class_inc'",)),
    ("unknown source kind", setting("stream.sources.syn.kind", "imagenet"), ("stream.sources.syn.kind: unknown data source 'imagenet'",)),
    ("negative samples per class", setting("stream.sources.syn.params.n_train_per_class", -4),
     ("stream.sources.syn.params: n_train_per_class: must be at least 1, got -4",)),
    ("zero-width synthetic data", setting("stream.sources.syn.params.dim", 0), ("stream.sources.syn.params: dim: must be at least 1, got 0",)),
    ("NaN separation", setting("stream.sources.syn.params.separation", float("nan")),
     ("stream.sources.syn.params: separation: must be a finite number, got nan",)),
    # --- overrides
    ("malformed list override", overrides("train.epochs=[1,2"), ("override 'train.epochs=[1,2': invalid YAML",)),
    ("override without a value", overrides("train.epochs"), ("override 'train.epochs': expected key=value",)),
    ("override with an empty key part", overrides("train..epochs=1"), ("override 'train..epochs=1': 'train..epochs' is not a key path",)),
    ("override of an unknown key", overrides("trian.epochs=1"), ("trian",)),
    ("override with an anchor", overrides("train.epochs=&a 3"), ("override 'train.epochs=&a 3': invalid YAML", "anchor")),
    ("override list onto a number", overrides("train.epochs=[1,2]"), ("train.epochs",)),
    ("override mapping onto a list", overrides("modality_eval.missing_rates={a: 1}"), ("modality_eval.missing_rates",)),
    ("override with only '='", overrides("="), ("override '=': expected key=value",)),
]


@pytest.mark.parametrize("name,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config(earlier, tmp_path, capsys, name, build, expected):
    argv = build(earlier, tmp_path)
    lines = [one_line_error(main, [command, *argv], capsys, *expected) for command in ("validate", "run")]
    assert lines[0] == lines[1]  # validate refuses exactly what run refuses
    earlier.assert_untouched()
    assert not MARKER.exists()


def test_unquoted_date_is_refused_with_the_key(earlier, tmp_path, capsys):
    path = tmp_path / "date.yaml"
    path.write_text(json.dumps(earlier.config())[:-1] + ', "seed": 2024-01-01}')  # YAML reads an unquoted date
    one_line_error(main, ["validate", str(path)], capsys, "seed")
    earlier.assert_untouched()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_accelerator_without_a_gpu_is_refused_before_anything_is_written(earlier, tmp_path, capsys):
    path = write_config(tmp_path / "gpu.yaml", earlier.config())
    for command in ("validate", "run"):
        one_line_error(main, [command, str(path), "trainer.accelerator=gpu"], capsys, "trainer.accelerator: Lightning refuses")
    earlier.assert_untouched()


def test_unknown_modality_kind_is_found_by_validate(earlier, tmp_path, capsys):
    """A kind no encoder reads shows only when the model is built: validate builds it too."""
    import numpy as np

    from battery import npz_config, save_npz

    train, test = save_npz(tmp_path / "train.npz"), save_npz(tmp_path / "test.npz")
    np.savez(train, x=np.ones((8, 3), np.float32), labels=np.arange(8) % 2)
    path = write_config(tmp_path / "c.yaml", npz_config(earlier, tmp_path, train, test, n_experiences=1, kinds={"x": "audio"}))
    for command in ("validate", "run"):
        one_line_error(main, [command, str(path)], capsys, "stream.sources.mine: modality 'x' has kind 'audio', for which no encoder is registered")
    earlier.assert_untouched()


def test_the_good_config_still_validates_and_writes_nothing(earlier, tmp_path, capsys):
    path = write_config(tmp_path / "good.yaml", earlier.config())
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid (class_incremental, 2 experiences, 4 classes)" in out and "trainer settings accepted" in out
    earlier.assert_untouched()
    assert not any(tmp_path.rglob("lightning_logs"))


@pytest.mark.slow
def test_help_and_config_errors_import_no_heavy_library(tmp_path):
    """`--help`, an unknown key and a wrong type are answered before torch, Lightning or Avalanche load
    (about 0.1 to 0.6 s on 2 busy CPU cores, against several seconds for those imports), within 3 s."""
    import subprocess
    import sys
    import time

    (tmp_path / "unknown.yaml").write_text("trian: {epochs: 1}\n")
    (tmp_path / "type.yaml").write_text("train: {epochs: many}\n")
    probe = ("import sys; from lifelong_moe.cli import main; rc = main(sys.argv[1:]); "
             "heavy = sorted(m for m in ('torch', 'lightning', 'avalanche', 'numpy') if m in sys.modules); "
             "print(rc, heavy)")
    for argv, rc in ((["--help"], 0), (["validate", str(tmp_path / "unknown.yaml")], 2), (["run", str(tmp_path / "type.yaml")], 2)):
        proc = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
        assert proc.stdout.strip().splitlines()[-1] == f"{rc} []", (argv, proc.stdout, proc.stderr)
        started = time.perf_counter()  # the real command, interpreter start-up included
        proc = subprocess.run([sys.executable, "-m", "lifelong_moe.cli", *argv], capture_output=True, text=True, timeout=120)
        elapsed = time.perf_counter() - started
        assert proc.returncode == rc and elapsed < 3.0, (argv, elapsed, proc.stderr)
        assert rc == 0 or len(proc.stderr.strip().splitlines()) == 1, proc.stderr
