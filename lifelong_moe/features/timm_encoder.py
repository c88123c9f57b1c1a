"""timm image encoders: `timm.create_model(name, pretrained=False, num_classes=0, **model_args)`, then
every weight loaded from a local file (a timm state dict: .safetensors or .pth/.bin); the classifier's
weights in the file are dropped. Preprocessing (input size, mean, std, interpolation) comes from the
model's pretrained config unless set. The family's checkpoint filter runs first, as in timm's own
loading, so e.g. a ViT's position embeddings follow `model_args: {img_size: ...}`. Features: the pooled
pre-logits vector."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong_moe.errors import DataError, first_line
from lifelong_moe.features.base import (
    EXTRACTORS,
    check_file_encoder,
    checked_device,
    frozen,
    load_exactly,
    prepare_images,
    read_state_dict,
)


@dataclass
class TimmParams:
    model_args: dict[str, Any] = field(default_factory=dict)  # more create_model arguments, e.g. {img_size: 224}
    image_size: list[int] = field(default_factory=list)  # [height, width]; empty: the model's input size
    mean: list[float] = field(default_factory=list)  # empty: the model's pretrained config
    std: list[float] = field(default_factory=list)  # empty: the model's pretrained config
    interpolation: str = ""  # bilinear | bicubic; empty: the model's pretrained config


class TimmExtractor:
    def __init__(self, model: Any, size: list[int], mean: list[float], std: list[float], interpolation: str, device: Any) -> None:
        self.model, self.size, self.mean, self.std, self.interpolation = model, size, mean, std, interpolation
        self.device = device

    def encode(self, x: Any) -> Any:
        return self.model(prepare_images(x, self.size, self.mean, self.std, self.interpolation))  # (B, D)


def _timm_filter(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """The model family's own `checkpoint_filter_fn`, as timm applies it to its pretrained files: it
    adapts older key layouts and resamples a ViT's position embeddings to another `img_size`."""
    import importlib

    fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        return state
    try:
        return fn(state, model)
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError):
        return state  # the exact load below then names what does not fit


FORBIDDEN_ARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir", "num_classes")
"""create_model arguments that would load other weights (from the hub, or a pickle through timm's own
loader) or that this encoder sets itself."""


def check_timm(enc: Any, params: TimmParams, key: str) -> list[Path]:
    """Offline, before anything is built or downloaded: an architecture timm has (not a hub reference such
    as `hf-hub:org/name`, which timm would fetch), no argument that loads weights, a weights file."""
    import timm

    name = enc.name
    if ":" in name:
        raise DataError(f"{key}.name: '{name}' refers to the hub; give the architecture's name (e.g. vit_base_patch16_224) "
                        f"and its weights as a local file in `weights` (nothing is downloaded)")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=3)
        raise DataError(f"{key}.name: timm has no architecture '{name}'" + (f" (close: {', '.join(close)})" if close else ""))
    return check_file_encoder(enc, params, key, FORBIDDEN_ARGS, ("", "bilinear", "bicubic"))  # "": the model's own


@EXTRACTORS.register("timm", params=TimmParams, modalities=("image",), packages=("timm",), needs_name=True, check=check_timm)
def timm_extractor(enc: Any, params: TimmParams, spec: Any, key: str) -> TimmExtractor:
    """timm image models (ViT, ResNet, ConvNeXt, ...) from a local weights file."""
    import timm

    check_timm(enc, params, key)
    try:
        model = timm.create_model(enc.name, pretrained=False, num_classes=0, **params.model_args)
    except Exception as err:  # a model's builder checks its arguments its own way
        raise DataError(f"{key}.name: cannot build timm model '{enc.name}' ({type(err).__name__}: {first_line(err)})") from None
    path = Path(enc.weights).expanduser()
    state = read_state_dict(path, f"{key}.weights")
    state = _timm_filter(model, state)
    head = model.pretrained_cfg.get("classifier") or ()
    heads = (head,) if isinstance(head, str) else tuple(head)
    state = {k: v for k, v in state.items() if not any(k == h or k.startswith(h + ".") for h in heads)}
    load_exactly(model, state, f"{key}.weights", path, f"timm '{enc.name}'")
    data_cfg = timm.data.resolve_data_config({}, model=model)
    size = list(params.image_size) or list(data_cfg["input_size"][1:])
    device = checked_device(enc.device, key)
    return TimmExtractor(frozen(model, device), size, list(params.mean) or list(data_cfg["mean"]),
                         list(params.std) or list(data_cfg["std"]), params.interpolation or data_cfg["interpolation"], device)
