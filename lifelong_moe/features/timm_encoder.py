"""timm image encoders: `timm.create_model(name, pretrained=False, num_classes=0, **model_args)`, then
every weight loaded from a local file (a timm state dict: .safetensors or .pth/.bin); the classifier's
weights in the file are dropped. Preprocessing (input size, mean, std, interpolation) comes from the
model's pretrained config unless set. The family's checkpoint filter runs first, as in timm's own
loading, so e.g. a ViT's position embeddings follow `model_args: {img_size: ...}`. Features: the pooled
pre-logits vector."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong_moe.errors import DataError, first_line
from lifelong_moe.features.base import EXTRACTORS, frozen, load_exactly, prepare_images, read_state_dict, resolve_device


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


@EXTRACTORS.register("timm", params=TimmParams, modalities=("image",), packages=("timm",), needs_name=True)
def timm_extractor(enc: Any, params: TimmParams, spec: Any, key: str) -> TimmExtractor:
    """timm image models (ViT, ResNet, ConvNeXt, ...) from a local weights file."""
    import timm

    try:
        model = timm.create_model(enc.name, pretrained=False, num_classes=0, **params.model_args)
    except (RuntimeError, TypeError, ValueError) as err:
        raise DataError(f"{key}.name: cannot build timm model '{enc.name}' ({first_line(err)})") from None
    path = Path(enc.weights).expanduser()
    state = read_state_dict(path, f"{key}.weights")
    state = _timm_filter(model, state)
    head = model.pretrained_cfg.get("classifier") or ()
    heads = (head,) if isinstance(head, str) else tuple(head)
    state = {k: v for k, v in state.items() if not any(k == h or k.startswith(h + ".") for h in heads)}
    load_exactly(model, state, f"{key}.weights", path, f"timm '{enc.name}'")
    data_cfg = timm.data.resolve_data_config({}, model=model)
    size = list(params.image_size) or list(data_cfg["input_size"][1:])
    device = resolve_device(enc.device)
    return TimmExtractor(frozen(model, device), size, list(params.mean) or list(data_cfg["mean"]),
                         list(params.std) or list(data_cfg["std"]), params.interpolation or data_cfg["interpolation"], device)
