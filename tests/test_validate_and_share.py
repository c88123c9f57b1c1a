"""`validate` checks pretrained encoders without encoding the data (the run encodes, with progress lines, and
starts from the same random numbers whether its features come from the cache or not); `compare` reads,
decodes and encodes each source once for all its methods and seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datafiles as D
from conftest import tiny_config, write_yaml
from lifelong_moe import config_from_dict, run
from lifelong_moe.cli import main

TIMM = {"kind": "timm", "name": "test_vit", "params": {"image_size": [32, 32], "model_args": {"img_size": 32}}}


def _folder_config(tmp_path: Path, cache: bool = True, pretrained: bool = False) -> dict[str, Any]:
    root = tmp_path / "img"
    if not root.exists():
        D.image_folder(root, n_per_class=6)
    cfg = tiny_config(tmp_path / "runs")
    cfg["stream"] = {"scenario": "class_incremental", "split": {"source": "mine", "n_experiences": 2},
                     "sources": {"mine": {"kind": "image_folder", "params": {"root": str(root), "size": [12, 12], "cache": cache}}}}
    cfg["train"] = {"epochs": 1, "batch_size": 8}
    cfg["trainer"]["cpu_threads"] = 1
    cfg["modality_eval"] = {"subsets": False, "single_each_experience": False, "missing_rates": []}
    cfg["output"]["plots"] = False
    if pretrained:
        weights = tmp_path / "vit.safetensors"
        if not weights.exists():
            D.timm_weights(weights)
        cfg["pretrained"] = {"image": {**TIMM, "weights": str(weights), "cache": cache}}
    return cfg


def test_validate_encodes_a_few_samples_and_the_run_encodes_all_with_progress(tmp_path, capsys, monkeypatch):
    import scenarios.progress

    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scenarios.progress, "EVERY_S", 0.0)  # a line per batch, however fast
    monkeypatch.setattr(scenarios.progress, "QUIET_S", 0.0)
    from lifelong_moe.features import EXTRACTORS

    encoded: list[int] = []
    factory = EXTRACTORS.get("timm")

    def counting(*args: Any) -> Any:
        extractor = factory(*args)
        inner = extractor.encode
        extractor.encode = lambda x: encoded.append(len(x)) or inner(x)
        return extractor

    monkeypatch.setitem(EXTRACTORS._entries, "timm", counting)
    cfg = _folder_config(tmp_path, pretrained=True)
    cfg["pretrained"]["image"]["batch_size"] = 8
    path = write_yaml(tmp_path / "c.yaml", cfg)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert sum(encoded) <= 5  # one warm-up sample and two train + two test samples, never the data set
    assert "-> 64-d features; weights loaded and a batch encoded; not in the cache: the first run encodes them (roughly" in out
    assert not list((tmp_path / "cache").glob("features/*.npz"))  # validate caches nothing it did not compute
    encoded.clear()
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert sum(encoded) == 24  # every sample once, in batches of 8
    progress = [ln for ln in out.splitlines() if "encoding image of source 'mine' with timm test_vit:" in ln]
    assert progress[-1].split(",")[0].endswith(": 24/24 (100%)") and len(progress) >= 3  # a line per batch here


def test_a_run_draws_the_same_numbers_with_and_without_cached_features(tmp_path, monkeypatch):
    """Building the encoder draws its initial weights; that must not shift the run's own random numbers."""
    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    cfg = config_from_dict(_folder_config(tmp_path, pretrained=True))
    cold = run(cfg, progress=lambda _: None)  # encodes
    warm = run(cfg, progress=lambda _: None)  # reads the features from the cache
    assert json.loads((warm.run_dir / "results.json").read_text())["status"] == "complete"
    np.testing.assert_array_equal(cold.accuracy_matrix, warm.accuracy_matrix)


@pytest.mark.parametrize("cache", [False, True])
def test_compare_decodes_a_folder_once_for_every_method_and_seed(tmp_path, monkeypatch, cache):
    import scenarios.sources.image_folder as image_folder
    from lifelong_moe.compare import compare

    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))  # empty: the first read decodes
    decoded: list[Path] = []
    decode = image_folder.decode_image
    monkeypatch.setattr(image_folder, "decode_image", lambda f, *a: decoded.append(f) or decode(f, *a))
    cfg = config_from_dict(_folder_config(tmp_path, cache=cache))
    out = compare(cfg, ["naive", "ewc", "replay", "joint"], seeds=2, progress=lambda _: None)
    files = sorted(p for p in (tmp_path / "img").rglob("*") if p.is_file())
    assert sorted(decoded) == files  # 4 strategies x 2 seeds: each file decoded once
    assert len(list(out.glob("*/seed*/results.json"))) == 8
    # outside the comparison nothing is held: a new run reads the folder again (from the disk cache, if on)
    decoded.clear()
    run(cfg, progress=lambda _: None)
    assert len(decoded) == (0 if cache else len(files))


def test_compare_encodes_once_for_every_method_and_seed(tmp_path, monkeypatch):
    from lifelong_moe.compare import compare
    from lifelong_moe.features import EXTRACTORS

    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    built: list[int] = []
    factory = EXTRACTORS.get("timm")
    monkeypatch.setitem(EXTRACTORS._entries, "timm", lambda *a: built.append(1) or factory(*a))
    compare(config_from_dict(_folder_config(tmp_path, cache=False, pretrained=True)), ["naive", "replay"], seeds=2,
            progress=lambda _: None)
    assert built == [1]  # features computed once, with the disk cache off, and shared by the 4 runs
