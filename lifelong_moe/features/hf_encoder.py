"""Hugging Face encoders: `AutoModel.from_pretrained(<local folder>, local_files_only=True,
trust_remote_code=False)` with the hub switched off, once the folder is checked to hold no code, for
image (pixel_values), text (input_ids, from a source tokenized with the same folder's tokenizer) and
raw-waveform audio (input_values) modalities. CLIP-like models give their projected embeddings
(`get_image_features` / `get_text_features`); others `pooler_output` where they have one, else the mean
of the last hidden states over (non-padding) tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong_moe.errors import DataError, first_line
from lifelong_moe.features.base import (
    EXTRACTORS,
    check_image_settings,
    checked_device,
    frozen,
    prepare_images,
    refused_pickle,
)
from scenarios.sources.hf_folder import folder_problem, read_json


@dataclass
class HFEncoderParams:
    pool: str = "auto"  # auto | pooler | cls | mean
    image_size: list[int] = field(default_factory=list)  # empty: preprocessor_config.json, else config.image_size
    mean: list[float] = field(default_factory=list)  # empty: preprocessor_config.json, else 0.5
    std: list[float] = field(default_factory=list)  # empty: preprocessor_config.json, else 0.5
    pad_token_id: int | None = None  # text: the padding id (default: the model config's, else 0)


def _preprocessor(folder: Path, key: str) -> dict[str, Any]:
    """preprocessor_config.json (if any), checked: an object whose size is a number of pixels or
    {height, width} / {shortest_edge}, and whose mean and std are three numbers each."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    pre, why = read_json(path)
    if why or not isinstance(pre, dict):
        raise DataError(f"{key}.weights: {why or f'{path} is not a JSON object'}")
    size = _side_pair(pre.get("crop_size") or pre.get("size"))
    if size is None:
        raise DataError(f"{key}.weights: {path}: size must be a number of pixels, {{height, width}} or {{shortest_edge}}, "
                        f"got {pre.get('crop_size') or pre.get('size')!r}")
    check_image_settings(size, pre.get("image_mean", []), pre.get("image_std", []), key, where=str(path))
    return {**pre, "_size": size}


def _side_pair(s: Any) -> list[int] | None:
    """[height, width] of a preprocessor's size ([] when it gives none), or None when it is malformed."""
    def side(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if s is None:
        return []
    if side(s):
        return [s, s]
    if isinstance(s, dict) and side(s.get("height")) and side(s.get("width")):
        return [s["height"], s["width"]]
    if isinstance(s, dict) and side(s.get("shortest_edge")):
        return [s["shortest_edge"]] * 2
    return None


def _image_settings(pre: dict[str, Any], model: Any, params: HFEncoderParams) -> tuple[list[int], list[float], list[float], str]:
    size = list(params.image_size) or pre.get("_size") or []
    if not size:
        config = getattr(model.config, "vision_config", model.config)
        size = [getattr(config, "image_size", 224)] * 2
    mean = list(params.mean) or list(pre.get("image_mean", [0.5, 0.5, 0.5]))
    std = list(params.std) or list(pre.get("image_std", [0.5, 0.5, 0.5]))
    interpolation = "bicubic" if pre.get("resample") == 3 else "bilinear"  # PIL's codes: 3 bicubic, 2 bilinear
    return [int(v) for v in size], mean, std, interpolation


class HFExtractor:
    def __init__(self, model: Any, kind: str, params: HFEncoderParams, image: tuple, pad: int, device: Any) -> None:
        self.model, self.kind, self.params, self.image, self.pad, self.device = model, kind, params, image, pad, device

    def encode(self, x: Any) -> Any:
        mask = None
        if self.kind == "image":
            inputs = {"pixel_values": prepare_images(x, *self.image)}
            special = "get_image_features"
        elif self.kind == "text":
            mask = (x != self.pad).long()  # (B, L)
            inputs = {"input_ids": x, "attention_mask": mask}
            special = "get_text_features"
        else:
            inputs = {"input_values": x[:, 0]}  # (B, samples)
            special = ""
        if self.params.pool == "auto" and special and hasattr(self.model, special):
            out = getattr(self.model, special)(**inputs)
            return out if hasattr(out, "shape") else out.pooler_output  # (B, D)
        out = self.model(**inputs)
        hidden = out.last_hidden_state  # (B, T, D)
        pooler = getattr(out, "pooler_output", None)
        if self.params.pool in ("auto", "pooler") and pooler is not None:
            return pooler
        if self.params.pool == "pooler":
            raise DataError(f"pretrained: {type(self.model).__name__} has no pooler output; use pool: mean or cls")
        if self.params.pool == "cls":
            return hidden[:, 0]
        if mask is not None and mask.shape[1] == hidden.shape[1]:
            w = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            return (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
        return hidden.mean(1)


def check_hf(enc: Any, params: HFEncoderParams, key: str) -> list[Path]:
    """Offline, before transformers is imported: a save_pretrained folder holding no code (no `.py`, no
    `auto_map`), a readable preprocessor config, valid params. Returns the files the weights are: the
    folder's own files (from_pretrained reads no sub-folder)."""
    folder = Path(enc.weights).expanduser()
    problem = folder_problem(folder)
    if problem:
        raise DataError(f"{key}.weights: {problem}")
    if params.pool not in ("auto", "pooler", "cls", "mean"):
        raise DataError(f"{key}.params.pool: must be auto, pooler, cls or mean, got '{params.pool}'")
    check_image_settings(params.image_size, params.mean, params.std, key)
    _preprocessor(folder, key)
    return sorted(p for p in folder.iterdir() if p.is_file())


def _load_model(folder: Path, key: str) -> Any:
    """AutoModel from the folder: local files only, and never its own code (trust_remote_code=False, so
    transformers neither prompts nor imports a module of the folder)."""
    import transformers
    from transformers import CONFIG_MAPPING, AutoModel

    config, _ = read_json(folder / "config.json")
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise DataError(f"{key}.weights: {folder / 'config.json'}: model_type {model_type!r} is not one that transformers "
                        f"{transformers.__version__} implements")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as err:  # a damaged folder fails inside transformers, safetensors or torch.load in many ways
        if refused_pickle(err):
            raise DataError(f"{key}.weights: {folder}: a weights file holds Python objects other than tensors (a pickle); "
                            f"refused without running it") from None
        raise DataError(f"{key}.weights: cannot load a model from {folder} ({type(err).__name__}: {first_line(err)[:300]})") from None


@EXTRACTORS.register("hf", params=HFEncoderParams, modalities=("image", "text", "signal"), packages=("transformers",), check=check_hf)
def hf_extractor(enc: Any, params: HFEncoderParams, spec: Any, key: str) -> HFExtractor:
    """Hugging Face transformers models (ViT, CLIP, BERT, wav2vec 2.0, ...) from a save_pretrained folder."""
    from lifelong_moe.offline import hf_offline

    hf_offline()
    check_hf(enc, params, key)
    if spec.kind == "signal" and spec.shape[0] != 1:
        raise DataError(f"{key}: hf audio encoders read the raw waveform [1, samples]; set the source's features: waveform")
    folder = Path(enc.weights).expanduser()
    model = _load_model(folder, key)
    pad = params.pad_token_id
    if pad is None:
        config = getattr(model.config, "text_config", model.config)
        pad = getattr(config, "pad_token_id", None) or 0
    image = _image_settings(_preprocessor(folder, key), model, params) if spec.kind == "image" else ()
    device = checked_device(enc.device, key)
    return HFExtractor(frozen(model, device), spec.kind, params, image, int(pad), device)
