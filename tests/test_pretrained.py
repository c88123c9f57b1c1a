"""Frozen pretrained encoders read from local files (timm, torchvision, Hugging Face): each kind through
`validate` and `run`; the feature cache returns identical features and misses when a data file or the
weights change; a missing or mismatched weights file, or a hub name, gets one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datafiles as D
from conftest import tiny_config, write_yaml
from lifelong_moe.cli import main
from lifelong_moe.config import config_from_dict
from lifelong_moe.errors import ConfigError
from lifelong_moe.features import EXTRACTORS, FeatureTransform
from lifelong_moe.registry import resolve_params
from scenarios.sources import SOURCES, load_source
from scenarios.sources import base as sources_base


def image_source(root: Path) -> dict[str, Any]:
    return {"kind": "image_folder", "params": {"root": str(root), "size": [16, 16]}}


def config(tmp_path: Path, sources: dict[str, Any], pretrained: dict[str, Any], split_source: str = "mine") -> Path:
    cfg = tiny_config(tmp_path / "runs")
    cfg["stream"]["sources"] = sources
    cfg["stream"]["split"] = {"source": split_source, "n_experiences": 2}
    cfg["train"]["epochs"] = 1
    cfg["evaluate_untrained"] = False
    cfg["modality_eval"] = {"subsets": False, "single_each_experience": False, "missing_rates": []}
    cfg["output"]["plots"] = False
    cfg["pretrained"] = pretrained
    return write_yaml(tmp_path / "config.yaml", cfg)


def encoder_case(tmp_path: Path, kind: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(sources, pretrained, encoded modality) for one encoder kind on tiny local files."""
    images = {"mine": image_source(D.image_folder(tmp_path / "img"))}
    if kind == "timm":
        return images, {"image": {"kind": "timm", "name": "test_vit", "weights": str(D.timm_weights(tmp_path / "vit.safetensors")),
                                  "params": {"image_size": [32, 32], "model_args": {"img_size": 32}}}}, "image"
    if kind == "torchvision":
        return images, {"image": {"kind": "torchvision", "name": "shufflenet_v2_x0_5",
                                  "weights": str(D.torchvision_weights(tmp_path / "shufflenet.pth")), "params": {"image_size": [32, 32]}}}, "image"
    if kind == "hf_image":
        return images, {"image": {"kind": "hf", "weights": str(D.hf_image_model(tmp_path / "vit"))}}, "image"
    folder = D.hf_text_model(tmp_path / "bert")
    table = {"mine": {"kind": "csv", "params": {"path": str(D.csv_table(tmp_path / "t.csv")), "text": ["note"], "ignore": ["id"],
                                                "tokenizer": {"kind": "hf", "path": str(folder), "max_length": 12}}}}
    return table, {"note": {"kind": "hf", "weights": str(folder), "params": {"pool": "mean"}}}, "note"


@pytest.mark.parametrize("kind", ["timm", "torchvision", "hf_image", "hf_text"])
def test_encoder_kind_validates_and_runs(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))  # fresh: other tests encode the same files
    sources, pretrained, modality = encoder_case(tmp_path, kind)
    cfg = config(tmp_path, sources, pretrained)
    assert main(["validate", str(cfg)]) == 0
    out = capsys.readouterr().out
    # validate loads the weights and encodes a few samples, but leaves the encoding (and caching) to the run
    assert f"pretrained {modality} (" in out and "weights loaded and a batch encoded; not in the cache: the first run encodes" in out
    assert "valid (class_incremental, 2 experiences" in out
    assert not list((tmp_path / "cache").glob("features/*.npz"))
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "computed and cached" in out
    res = json.loads((tmp_path / "runs" / "tiny" / "version_0" / "results.json").read_text())
    assert res["status"] == "complete"
    assert main(["validate", str(cfg)]) == 0
    assert "read from the cache" in capsys.readouterr().out  # once the run has encoded them


def _images(tmp_path: Path) -> tuple[Path, Any]:
    root = tmp_path / "img"
    if not root.exists():
        D.image_folder(root)
    sources_base._CACHE.clear()
    return root, load_source("image_folder", resolve_params(SOURCES, "image_folder", image_source(root)["params"], "p"), 0)


def _timm_pretrained(weights: Path) -> dict[str, Any]:
    cfg = config_from_dict({"pretrained": {"image": {"kind": "timm", "name": "test_vit", "weights": str(weights),
                                                     "params": {"image_size": [32, 32], "model_args": {"img_size": 32}}}}})
    return cfg.pretrained


def test_feature_cache_identical_and_invalidated(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))  # not the session's: start empty
    weights = D.timm_weights(tmp_path / "vit.safetensors", seed=0)
    root, data = _images(tmp_path)
    built = []
    factory = EXTRACTORS.get("timm")
    monkeypatch.setitem(EXTRACTORS._entries, "timm", lambda *a: built.append(1) or factory(*a))

    first = FeatureTransform(_timm_pretrained(weights), progress=lambda _: None)("mine", data)
    assert built == [1] and first.modalities["image"].kind == "tabular" and first.modalities["image"].shape == (64,)
    second_t = FeatureTransform(_timm_pretrained(weights), progress=lambda _: None)
    second = second_t("mine", data)
    assert built == [1] and second_t.records[0]["cached"]  # read from the cache: no model built
    np.testing.assert_array_equal(first.train.inputs["image"], second.train.inputs["image"])
    np.testing.assert_array_equal(first.test.inputs["image"], second.test.inputs["image"])
    assert data.modalities["image"].kind == "image"  # the source itself is left as it was

    # a changed data file: the decoded arrays change, so the features are computed again
    Image.fromarray(np.full((12, 16, 3), 255, np.uint8)).save(root / "dog" / "dog_1.png")
    _, changed = _images(tmp_path)
    third = FeatureTransform(_timm_pretrained(weights), progress=lambda _: None)("mine", changed)
    assert built == [1, 1]
    assert not np.array_equal(np.concatenate([first.train.inputs["image"], first.test.inputs["image"]]),
                              np.concatenate([third.train.inputs["image"], third.test.inputs["image"]]))

    # changed weights in the same file: another hash, other features
    D.timm_weights(weights, seed=1)
    fourth = FeatureTransform(_timm_pretrained(weights), progress=lambda _: None)("mine", changed)
    assert built == [1, 1, 1]
    assert not np.allclose(third.train.inputs["image"], fourth.train.inputs["image"])


def test_features_equal_the_frozen_model_output(tmp_path):
    import timm
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    weights = D.timm_weights(tmp_path / "vit.safetensors", img_size=32)
    _, data = _images(tmp_path)
    features = FeatureTransform(_timm_pretrained(weights), progress=lambda _: None)("mine", data).train.inputs["image"]
    model = timm.create_model("test_vit", pretrained=False, img_size=32)
    state = load_file(str(weights))
    model.load_state_dict(state)
    model.reset_classifier(0)
    model.eval()
    x = torch.from_numpy(data.train.inputs["image"])
    x = F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)  # test_vit: bicubic, mean=std=0.5
    with torch.no_grad():
        expect = model((x - 0.5) / 0.5).numpy()
    np.testing.assert_allclose(features, expect, rtol=1e-4, atol=1e-5)


def _missing_weights(tmp_path):
    return {"image": {"kind": "timm", "name": "test_vit", "weights": str(tmp_path / "absent.safetensors")}}, \
        f"pretrained.image.weights: not found: {tmp_path / 'absent.safetensors'}"


def _other_architecture(tmp_path):
    return {"image": {"kind": "timm", "name": "test_vit2", "weights": str(D.timm_weights(tmp_path / "vit.safetensors"))}}, \
        f"pretrained.image.weights: {tmp_path / 'vit.safetensors'} does not fit timm 'test_vit2'"


def _not_weights(tmp_path):
    (tmp_path / "w.pth").write_text("not a checkpoint")
    return {"image": {"kind": "torchvision", "name": "resnet18", "weights": str(tmp_path / "w.pth")}}, \
        f"pretrained.image.weights: {tmp_path / 'w.pth'}: not a readable weights file"


def _hub_name(tmp_path):
    return {"image": {"kind": "hf", "weights": "google/vit-base-patch16-224"}}, \
        "pretrained.image.weights: not found: google/vit-base-patch16-224 (a local folder written by save_pretrained; nothing is downloaded"


def _unknown_timm_model(tmp_path):
    return {"image": {"kind": "timm", "name": "no_such_net", "weights": str(D.timm_weights(tmp_path / "vit.safetensors"))}}, \
        "pretrained.image.name: timm has no architecture 'no_such_net'"


def _modality_not_in_stream(tmp_path):
    return {"audio": {"kind": "hf", "weights": str(tmp_path)}}, "pretrained.audio: no source of the stream has a modality 'audio'"



def _unknown_kind(tmp_path):
    return {"image": {"kind": "onnx", "weights": "x"}}, "pretrained.image.kind: unknown pretrained encoder 'onnx'; registered: hf, timm, torchvision"


def _bad_param(tmp_path):
    return {"image": {"kind": "timm", "name": "test_vit", "weights": "x", "params": {"img_size": 3}}}, \
        "pretrained.image.params.img_size: Key 'img_size' not in 'TimmParams'"


CASES = [_missing_weights, _other_architecture, _not_weights, _hub_name, _unknown_timm_model, _modality_not_in_stream,
         _unknown_kind, _bad_param]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_encoder_problems_are_one_line(tmp_path, capsys, case):
    pretrained, expected = case(tmp_path)
    cfg = config(tmp_path, {"mine": image_source(D.image_folder(tmp_path / "img"))}, pretrained)
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err, err
    assert "\n" not in err and "Traceback" not in err


def test_audio_encoder_needs_a_waveform(tmp_path, capsys):
    sources = {"mine": {"kind": "audio_folder", "params": {"root": str(D.audio_folder(tmp_path / "aud")), "sample_rate": 8000}}}
    cfg = config(tmp_path, sources, {"audio": {"kind": "timm", "name": "test_vit", "weights": str(tmp_path)}})
    assert main(["validate", str(cfg)]) == 2
    assert "pretrained.audio: a timm encoder reads image modalities; this one is signal [40, 51]" in capsys.readouterr().err


def test_pretrained_config_checked_at_load():
    with pytest.raises(ConfigError, match=r"pretrained.image.name: a timm encoder needs the architecture's name"):
        config_from_dict({"pretrained": {"image": {"kind": "timm", "weights": "w.safetensors"}}})
    with pytest.raises(ConfigError, match=r"pretrained.image.weights: missing mandatory value"):
        config_from_dict({"pretrained": {"image": {"kind": "timm", "name": "vit"}}})


ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.epochs=1", "evaluate_untrained=false", "modality_eval.subsets=false",
        "modality_eval.single_each_experience=false", "modality_eval.missing_rates=[]", "output.plots=false"]


def _shipped(tmp_path: Path, name: str) -> tuple[list[str], int]:
    """Overrides that point a shipped benchmark config at tiny stand-ins of its data and weights."""
    out = [f"output.root={tmp_path / 'runs'}", "stream.split.n_experiences=2", *FAST]  # 2 experiences: fast
    if name == "split_cifar100_10x10":
        root = D.cifar(tmp_path / "cifar", hundred=True, n=200, n_classes=100)
        return [*out, f"stream.sources.cifar100.params.root={root}",
                f"pretrained.image.weights={D.hf_clip_model(tmp_path / 'clip')}"], 2
    if name == "split_cifar10_vit":
        root = D.cifar(tmp_path / "cifar", n=20)
        return [*out, f"stream.sources.cifar10.params.root={root}", "pretrained.image.name=test_vit",
                f"pretrained.image.weights={D.timm_weights(tmp_path / 'vit.safetensors')}"], 2
    if name == "split_fashion_mnist":
        return [*out, f"stream.sources.fmnist.params.root={D.mnist(tmp_path / 'fm', 'FashionMNIST')}"], 2
    img, aud = D.image_folder(tmp_path / "img", classes=tuple("0123456789")), D.audio_folder(tmp_path / "aud", classes=tuple("0123456789"))
    return [*out, f"stream.sources.av.params.sources.pictures.params.root={img}",
            f"stream.sources.av.params.sources.sounds.params.root={aud}"], 2


@pytest.mark.parametrize("name", ["split_cifar100_10x10", "split_cifar10_vit", "split_fashion_mnist", "folders_image_audio"])
def test_shipped_benchmark_config_runs_on_tiny_stand_ins(tmp_path, capsys, name):
    overrides, n_exp = _shipped(tmp_path, name)
    assert main(["run", str(ROOT / "configs" / f"{name}.yaml"), *overrides]) == 0, capsys.readouterr().err
    res = json.loads(next((tmp_path / "runs").glob("*/version_0/results.json")).read_text())
    assert res["status"] == "complete" and len(res["accuracy_matrix"]) == n_exp
    if name == "split_cifar100_10x10":  # the class order of MoE-Adapters4CL, and CLIP's projected image features
        assert res["experiences"][0]["classes"][:3] == [0, 4, 8]  # 87, 0, 52, ... in sorted order
        assert len(res["experiences"][0]["classes"]) == 50
        assert "-> 12-d features" in capsys.readouterr().out
