"""Hugging Face encoders: `AutoModel.from_pretrained(<local folder>, local_files_only=True)` with the hub
switched off, for image (pixel_values), text (input_ids, from a source tokenized with the same folder's
tokenizer) and raw-waveform audio (input_values) modalities. CLIP-like models give their projected
embeddings (`get_image_features` / `get_text_features`); others `pooler_output` where they have one,
else the mean of the last hidden states over (non-padding) tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong_moe.errors import DataError, first_line
from lifelong_moe.features.base import EXTRACTORS, frozen, prepare_images, resolve_device


@dataclass
class HFEncoderParams:
    pool: str = "auto"  # auto | pooler | cls | mean
    image_size: list[int] = field(default_factory=list)  # empty: preprocessor_config.json, else config.image_size
    mean: list[float] = field(default_factory=list)  # empty: preprocessor_config.json, else 0.5
    std: list[float] = field(default_factory=list)  # empty: preprocessor_config.json, else 0.5
    pad_token_id: int | None = None  # text: the padding id (default: the model config's, else 0)


def _image_settings(folder: Path, model: Any, params: HFEncoderParams) -> tuple[list[int], list[float], list[float], str]:
    pre: dict[str, Any] = {}
    if (folder / "preprocessor_config.json").is_file():
        pre = json.loads((folder / "preprocessor_config.json").read_text())
    size = list(params.image_size)
    if not size:
        s = pre.get("crop_size") or pre.get("size")
        if isinstance(s, dict):
            s = [s["height"], s["width"]] if "height" in s else [s.get("shortest_edge")] * 2
        elif isinstance(s, int):
            s = [s, s]
        config = getattr(model.config, "vision_config", model.config)
        size = list(s) if s and None not in s else [getattr(config, "image_size", 224)] * 2
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


@EXTRACTORS.register("hf", params=HFEncoderParams, modalities=("image", "text", "signal"), packages=("transformers",))
def hf_extractor(enc: Any, params: HFEncoderParams, spec: Any, key: str) -> HFExtractor:
    """Hugging Face transformers models (ViT, CLIP, BERT, wav2vec 2.0, ...) from a save_pretrained folder."""
    from lifelong_moe.offline import hf_offline

    hf_offline()
    if params.pool not in ("auto", "pooler", "cls", "mean"):
        raise DataError(f"{key}.params.pool: must be auto, pooler, cls or mean, got '{params.pool}'")
    if spec.kind == "signal" and spec.shape[0] != 1:
        raise DataError(f"{key}: hf audio encoders read the raw waveform [1, samples]; set the source's features: waveform")
    folder = Path(enc.weights).expanduser()
    if not (folder / "config.json").is_file():
        raise DataError(f"{key}.weights: {folder} holds no config.json; give a folder written by save_pretrained")
    import transformers
    from transformers import AutoModel

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{key}.weights: cannot load a model from {folder} ({type(err).__name__}: {first_line(err)})") from None
    pad = params.pad_token_id
    if pad is None:
        config = getattr(model.config, "text_config", model.config)
        pad = getattr(config, "pad_token_id", None) or 0
    image = _image_settings(folder, model, params) if spec.kind == "image" else ()
    device = resolve_device(enc.device)
    return HFExtractor(frozen(model, device), spec.kind, params, image, int(pad), device)
