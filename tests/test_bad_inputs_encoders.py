"""Bad-input battery, weights family: frozen encoders of every kind (timm, torchvision, Hugging Face)
given architectures that would download weights, hub references, folders that carry code, weights
files that are not files, damaged configs, impossible preprocessing, and devices this machine lacks.
Each goes through the real CLI (`validate`, then `run`): exit code 2, one line naming the key and file,
nothing written, the earlier run byte-identical, and no code from a folder ever runs. Then: every load
passes `trust_remote_code=False` and `local_files_only=True`; a device is checked even when the features
come from the cache; the same config and seed give the same run with a cold and a warm feature cache."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import datafiles as D
from battery import Earlier, one_line_error, user_source, write_config
from lifelong_moe.cli import main

MARKER = Path("/tmp/lifelong-moe-battery-weights-code-ran")


class Payload:
    """Unpickling this creates MARKER: what a crafted weights file could do if loaded unsafely."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(MARKER),))


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    D.image_folder(root / "img")
    D.timm_weights(root / "vit.safetensors")
    D.torchvision_weights(root / "shufflenet.pth")
    D.hf_image_model(root / "hfvit")
    return root


Case = Callable[[Path, Path], dict[str, Any]]  # (stock, tmp) -> pretrained.image


def timm(weights: str = "{stock}/vit.safetensors", name: str = "test_vit", **params: Any) -> Case:
    return lambda stock, tmp: {"kind": "timm", "name": name, "weights": weights.format(stock=stock, tmp=tmp),
                               "params": {"image_size": [32, 32], "model_args": {"img_size": 32}, **params}}


def tv(name: str = "shufflenet_v2_x0_5", weights: str = "{stock}/shufflenet.pth", **params: Any) -> Case:
    return lambda stock, tmp: {"kind": "torchvision", "name": name, "weights": weights.format(stock=stock, tmp=tmp),
                               "params": {"image_size": [32, 32], **params}}


def hf(change: Callable[[Path], Any] = lambda folder: None, weights: str = "{tmp}/hfvit", **params: Any) -> Case:
    """The stock tiny ViT folder copied to tmp, `change`d there."""
    def case(stock: Path, tmp: Path) -> dict[str, Any]:
        shutil.copytree(stock / "hfvit", tmp / "hfvit")
        change(tmp / "hfvit")
        return {"kind": "hf", "weights": weights.format(stock=stock, tmp=tmp), "params": params}
    return case


def with_file(made: Callable[[Path], Any], spec: Case) -> Case:
    """`spec`, after `made(tmp)` has put what it needs in tmp."""
    def case(stock: Path, tmp: Path) -> dict[str, Any]:
        made(tmp)
        return spec(stock, tmp)
    return case


def device(value: str, spec: Case) -> Case:
    return lambda stock, tmp: {**spec(stock, tmp), "device": value}


def _json_edit(name: str, change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        content = json.loads((folder / name).read_text())
        change(content)
        (folder / name).write_text(json.dumps(content))
    return edit


def _pickled_bin(folder: Path) -> None:
    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save({"embeddings.cls_token": Payload()}, folder / "pytorch_model.bin")


def _pickled_pth(tmp: Path) -> None:
    torch.save({"weight": Payload()}, tmp / "evil.pth")


T, S = "{tmp}", "{stock}"
PI = "pretrained.image"
CASES: list[tuple[str, Case, tuple[str, ...]]] = [
    # --- architectures that would reach the network, and hub references
    ("torchvision detection model (fasterrcnn)", tv("fasterrcnn_mobilenet_v3_large_320_fpn"),
     (f"{PI}.name: 'fasterrcnn_mobilenet_v3_large_320_fpn' is a torchvision detection model",)),
    ("torchvision segmentation model (deeplab)", tv("deeplabv3_mobilenet_v3_large"), (f"{PI}.name: 'deeplabv3_mobilenet_v3_large' is a torchvision segmentation model",)),
    ("torchvision video model", tv("r3d_18"), (f"{PI}.name: 'r3d_18' is a torchvision video model",)),
    ("torchvision optical-flow model", tv("raft_small"), (f"{PI}.name: 'raft_small' is a torchvision optical flow model",)),
    ("torchvision quantized model", tv("quantized_resnet18"), (f"{PI}.name: 'quantized_resnet18' is a torchvision quantization model",)),
    ("torchvision name with a typo", tv("resnet181"), (f"{PI}.name: torchvision has no classification model 'resnet181' (close: resnet18",)),
    ("torchvision model_args.weights_backbone", tv(model_args={"weights_backbone": "DEFAULT"}), (f"{PI}.params.model_args.weights_backbone: not allowed",)),
    ("torchvision model_args.pretrained", tv(model_args={"pretrained": True}), (f"{PI}.params.model_args.pretrained: not allowed",)),
    ("timm name only on the hub", timm(name="hf-hub:timm/vit_tiny_patch16_224.augreg_in21k"),
     (f"{PI}.name: 'hf-hub:timm/vit_tiny_patch16_224.augreg_in21k' refers to the hub",)),
    ("timm local-dir name", timm(name="local-dir:/tmp"), (f"{PI}.name: 'local-dir:/tmp' refers to the hub",)),
    ("timm unknown architecture", timm(name="vit_nonexistent_patch16"), (f"{PI}.name: timm has no architecture 'vit_nonexistent_patch16'",)),
    ("timm model_args.pretrained", timm(model_args={"pretrained": True}), (f"{PI}.params.model_args.pretrained: not allowed",)),
    ("timm model_args.checkpoint_path", timm(model_args={"checkpoint_path": "/tmp/x.pth"}), (f"{PI}.params.model_args.checkpoint_path: not allowed",)),
    # --- folders that carry code
    ("hf folder whose auto_map names hub code", hf(_json_edit("config.json", lambda c: c.update(auto_map={"AutoModel": "someone/repo--modeling_x.XModel"}))),
     (f"{PI}.weights: {T}/hfvit/config.json asks for custom code ('auto_map')",)),
    ("hf folder holding a .py", hf(lambda f: (f / "helper.py").write_text("print('hi')\n")), (f"{PI}.weights: {T}/hfvit holds Python code (helper.py)",)),
    ("hf folder that is a PEFT adapter", hf(lambda f: (f / "adapter_config.json").write_text('{"base_model_name_or_path": "org/model"}')),
     (f"{PI}.weights: {T}/hfvit is a PEFT adapter",)),
    ("hf pytorch_model.bin holding a pickle", hf(_pickled_bin), (f"{PI}.weights: {T}/hfvit: a weights file holds Python objects other than tensors",)),
    ("timm .pth holding a pickle", with_file(_pickled_pth, timm(weights="{tmp}/evil.pth")), (f"{PI}.weights: {T}/evil.pth: holds Python objects other than tensors (a pickle); refused without running it",)),
    # --- weights that are not files, or damaged
    ("/proc/self as timm weights", timm(weights="/proc/self"), (f"{PI}.weights: /proc/self is a folder",)),
    ("/proc/self as hf weights", hf(weights="/proc/self"), (f"{PI}.weights: /proc/self holds no config.json",)),
    ("timm weights that are a FIFO", with_file(lambda t: os.mkfifo(t / "w.safetensors"), timm(weights="{tmp}/w.safetensors")),
     (f"{PI}.weights: {T}/w.safetensors is not a regular file",)),
    ("timm weights linked to /dev/zero", with_file(lambda t: os.symlink("/dev/zero", t / "z.pth"), timm(weights="{tmp}/z.pth")),
     (f"{PI}.weights: {T}/z.pth is not a regular file",)),
    ("torchvision weights that are a folder", tv(weights="{stock}/img"), (f"{PI}.weights: {S}/img is a folder",)),
    ("torchvision weights of another architecture", tv(name="resnet18"), (f"{PI}.weights: {S}/shufflenet.pth does not fit torchvision 'resnet18'",)),
    ("hf weights that are a file", hf(weights="{tmp}/hfvit/config.json"), (f"{PI}.weights: {T}/hfvit/config.json is not a folder",)),
    ("hf folder without config.json", hf(lambda f: (f / "config.json").unlink()), (f"{PI}.weights: {T}/hfvit holds no config.json",)),
    ("hf config.json that is not JSON", hf(lambda f: (f / "config.json").write_text("{'model_type': 'vit'")), (f"{PI}.weights: {T}/hfvit/config.json is not readable JSON",)),
    ("hf config.json without model_type", hf(_json_edit("config.json", lambda c: c.pop("model_type"))), (f"{PI}.weights: {T}/hfvit/config.json: model_type None is not one",)),
    ("hf unknown model_type", hf(_json_edit("config.json", lambda c: c.update(model_type="nosuchtype"))),
     (f"{PI}.weights: {T}/hfvit/config.json: model_type 'nosuchtype' is not one that transformers",)),
    ("hf model.safetensors cut short", hf(lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:300])),
     (f"{PI}.weights: cannot load a model from {T}/hfvit",)),
    ("preprocessor_config.json that is not JSON", hf(lambda f: (f / "preprocessor_config.json").write_text("size: 32")),
     (f"{PI}.weights: {T}/hfvit/preprocessor_config.json is not readable JSON",)),
    ("preprocessor_config.json with a size in words", hf(_json_edit("preprocessor_config.json", lambda c: c.update(size="big"))),
     (f"{PI}.weights: {T}/hfvit/preprocessor_config.json: size must be a number of pixels", "got 'big'")),
    ("preprocessor_config.json with two means", hf(_json_edit("preprocessor_config.json", lambda c: c.update(image_mean=[0.5, 0.5]))),
     (f"{PI}.weights: {T}/hfvit/preprocessor_config.json: image_mean: must be three finite numbers",)),
    # --- preprocessing and devices
    ("image_size 0", hf(image_size=[0, 0]), (f"{PI}.params.image_size: must be [height, width] in 1..4096, got [0, 0]",)),
    ("image_size of 100000", timm(image_size=[100000, 100000]), (f"{PI}.params.image_size: must be [height, width] in 1..4096",)),
    ("std 0", timm(std=[0.0, 0.0, 0.0]), (f"{PI}.params.std: must be positive (images are divided by it)",)),
    ("negative std", hf(std=[0.5, -0.5, 0.5]), (f"{PI}.params.std: must be positive",)),
    ("a NaN mean", tv(mean=[0.5, float("nan"), 0.5]), (f"{PI}.params.mean: must be three finite numbers",)),
    ("interpolation nearest", timm(interpolation="nearest"), (f"{PI}.params.interpolation: must be bilinear or bicubic, got 'nearest'",)),
    ("device cuda without a GPU", device("cuda", timm()), (f"{PI}.device: 'cuda' but torch sees no CUDA GPU on this machine",)),
    ("device cuda:7", device("cuda:7", tv()), (f"{PI}.device: 'cuda:7' but",)),
    ("device tpu", device("tpu", hf()), (f"{PI}.device: expected auto, cpu, cuda, cuda:N or mps; got 'tpu'",)),
]


@pytest.mark.parametrize("name,case,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_encoder(earlier: Earlier, stock: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch,
                     name: str, case: Case, expected: tuple[str, ...]) -> None:
    if "cuda" in name and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the case is about one without")
    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    pretrained = case(stock, tmp_path)
    argv = user_source(lambda t: {"kind": "image_folder", "params": {"root": str(stock / "img"), "size": [16, 16]}},
                       {"image": pretrained})(earlier, tmp_path)
    texts = [e.replace(T, str(tmp_path)).replace(S, str(stock)) for e in expected]
    lines = [one_line_error(main, [command, *argv], capsys, *texts) for command in ("validate", "run")]
    assert lines[0] == lines[1]
    assert not MARKER.exists(), "code from the weights ran"
    earlier.assert_untouched()


def test_every_load_passes_trust_remote_code_false(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model and tokenizer loads say trust_remote_code=False and local_files_only=True themselves, so
    transformers never asks (its default, None, prompts for a folder with an auto_map)."""
    import transformers
    from test_pretrained import config

    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    calls: list[tuple[str, dict[str, Any]]] = []
    for cls in (transformers.AutoModel, transformers.AutoTokenizer):
        real = cls.from_pretrained.__func__

        def spy(klass: Any, *args: Any, _real: Any = real, _name: str = cls.__name__, **kwargs: Any) -> Any:
            calls.append((_name, kwargs))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    folder = D.hf_text_model(tmp_path / "bert")
    table = {"mine": {"kind": "csv", "params": {"path": str(D.csv_table(tmp_path / "t.csv")), "text": ["note"], "ignore": ["id"],
                                                "tokenizer": {"kind": "hf", "path": str(folder), "max_length": 12}}}}
    assert main(["validate", str(config(tmp_path, table, {"note": {"kind": "hf", "weights": str(folder)}}))]) == 0, capsys.readouterr().err
    assert sorted(name for name, _ in calls) == ["AutoModel", "AutoTokenizer"]
    assert all(kw.get("trust_remote_code") is False and kw.get("local_files_only") is True for _, kw in calls), calls


@pytest.mark.skipif(torch.cuda.is_available(), reason="the case is about a machine without a GPU")
def test_a_missing_gpu_is_refused_when_the_features_are_cached(earlier: Earlier, stock: Path, tmp_path: Path, capsys: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`device: cuda` used to pass when the features came from the cache (exit 0 with no GPU): the device
    is checked first, and it enters the cache key (a GPU's features may differ in their last bits)."""
    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    source = user_source(lambda t: {"kind": "image_folder", "params": {"root": str(stock / "img"), "size": [16, 16]}},
                         {"image": timm()(stock, tmp_path)})
    assert main(["run", *source(earlier, tmp_path), f"output.root={tmp_path / 'runs'}"]) == 0  # encodes and caches
    assert "computed and cached" in capsys.readouterr().out
    assert main(["validate", *source(earlier, tmp_path)]) == 0
    assert "read from the cache" in capsys.readouterr().out
    for command in ("validate", "run"):
        one_line_error(main, [command, *source(earlier, tmp_path), "pretrained.image.device=cuda"], capsys,
                       "pretrained.image.device: 'cuda' but torch sees no CUDA GPU on this machine")
    earlier.assert_untouched()


def test_a_cold_and_a_warm_feature_cache_give_the_same_run(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building an encoder draws its random initialisation from torch's global generator: with a cold
    cache the run's own draws (the model's init, the batches' order) used to come after it, so the same
    config and seed trained another model than with a warm cache. Now R, and every trained weight, agree."""
    from conftest import tiny_config

    monkeypatch.setenv("LIFELONG_MOE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(tmp_path / "runs", train={"epochs": 1, "batch_size": 4, "lr": 0.003}, evaluate_untrained=False,
                      modality_eval={"subsets": False, "single_each_experience": False, "missing_rates": []})
    cfg["stream"]["sources"] = {"mine": {"kind": "image_folder", "params": {"root": str(D.image_folder(tmp_path / "img")), "size": [16, 16]}}}
    cfg["stream"]["split"] = {"source": "mine", "n_experiences": 2}
    cfg["pretrained"] = {"image": timm()(tmp_path, tmp_path) | {"weights": str(D.timm_weights(tmp_path / "vit.safetensors"))}}
    cfg["output"]["plots"] = False
    path = write_config(tmp_path / "c.yaml", cfg)
    runs = []
    for expected in ("computed and cached", "read from the cache"):
        assert main(["run", str(path)]) == 0, capsys.readouterr().err
        assert expected in capsys.readouterr().out
        run_dir = sorted((tmp_path / "runs" / "tiny").iterdir())[-1]
        runs.append((json.loads((run_dir / "results.json").read_text()), torch.load(run_dir / "checkpoint.pt", weights_only=True)))
    (cold, cold_ckpt), (warm, warm_ckpt) = runs
    assert cold["accuracy_matrix"] == warm["accuracy_matrix"]
    assert cold["metrics"] == warm["metrics"]
    assert cold_ckpt["model"].keys() == warm_ckpt["model"].keys()
    assert all(torch.equal(cold_ckpt["model"][k], warm_ckpt["model"][k]) for k in cold_ckpt["model"])
