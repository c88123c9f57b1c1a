"""torchvision image encoders: `torchvision.models.get_model(name, weights=None, **model_args)`, every
weight loaded from a local file (a state dict: .pth or .safetensors), the classifier replaced by the
identity (the last nn.Linear, or the module named by `strip`). ImageNet preprocessing unless set."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
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
class TorchvisionEncoderParams:
    model_args: dict[str, Any] = field(default_factory=dict)  # more builder arguments, e.g. {num_classes: 10}
    image_size: list[int] = field(default_factory=lambda: [224, 224])  # [height, width] the images are resized to
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # per-channel mean subtracted (ImageNet's)
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])  # per-channel std divided by (ImageNet's)
    interpolation: str = "bilinear"  # bilinear | bicubic
    strip: str | None = None  # dotted name of the module replaced by the identity; None: the last nn.Linear


class TorchvisionExtractor:
    def __init__(self, model: Any, params: TorchvisionEncoderParams, device: Any) -> None:
        self.model, self.params, self.device = model, params, device

    def encode(self, x: Any) -> Any:
        p = self.params
        return self.model(prepare_images(x, p.image_size, p.mean, p.std, p.interpolation)).flatten(1)  # (B, D)


FORBIDDEN_ARGS = ("weights", "weights_backbone", "pretrained", "pretrained_backbone", "progress", "quantize")
"""Builder arguments that would load other weights (torchvision downloads them, or reads its hub cache)."""


def check_torchvision(enc: Any, params: TorchvisionEncoderParams, key: str) -> list[Path]:
    """Offline, before anything is built: a classification architecture (detection and segmentation
    builders default to downloading their backbone's weights), no argument that loads weights, a
    weights file."""
    import torchvision

    name = enc.name
    if name not in torchvision.models.list_models(module=torchvision.models):
        if name in torchvision.models.list_models():
            family = torchvision.models.get_model_builder(name).__module__.split(".")[-2].replace("_", " ")  # detection, video, ...
            raise DataError(f"{key}.name: '{name}' is a torchvision {family} model; this encoder takes classification "
                            f"models (e.g. resnet50, vit_b_16, convnext_tiny)")
        close = difflib.get_close_matches(name, torchvision.models.list_models(module=torchvision.models), n=3)
        raise DataError(f"{key}.name: torchvision has no classification model '{name}'" + (f" (close: {', '.join(close)})" if close else ""))
    return check_file_encoder(enc, params, key, FORBIDDEN_ARGS, ("bilinear", "bicubic"))


@contextmanager
def no_weight_downloads(key: str) -> Iterator[None]:
    """While a builder runs, any torchvision weights it would fetch (a URL, or torch's hub cache) raise
    instead: the only weights are the user's file."""
    from torchvision.models._api import WeightsEnum

    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise DataError(f"{key}.name: building '{self}' would load weights from {self.url}; nothing is downloaded")

    real = WeightsEnum.get_state_dict
    WeightsEnum.get_state_dict = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        WeightsEnum.get_state_dict = real  # type: ignore[method-assign]


@EXTRACTORS.register("torchvision", params=TorchvisionEncoderParams, modalities=("image",), packages=("torchvision",),
                     needs_name=True, check=check_torchvision)
def torchvision_extractor(enc: Any, params: TorchvisionEncoderParams, spec: Any, key: str) -> TorchvisionExtractor:
    """torchvision classification models (ResNet, ViT, ConvNeXt, ...) from a local state dict."""
    import torchvision
    from torch import nn

    check_torchvision(enc, params, key)
    try:
        with no_weight_downloads(key):
            model = torchvision.models.get_model(enc.name, weights=None, **params.model_args)
    except DataError:
        raise
    except Exception as err:  # a builder checks its arguments its own way
        raise DataError(f"{key}.name: cannot build torchvision model '{enc.name}' ({type(err).__name__}: {first_line(err)})") from None
    path = Path(enc.weights).expanduser()
    load_exactly(model, read_state_dict(path, f"{key}.weights"), f"{key}.weights", path, f"torchvision '{enc.name}'")
    target = params.strip
    if target is None:
        target = next((name for name, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)), None)
        if target is None:
            raise DataError(f"{key}.params.strip: '{enc.name}' has no nn.Linear classifier; name the module to strip")
    parent_name, _, child = target.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
        getattr(parent, child)
    except AttributeError:
        raise DataError(f"{key}.params.strip: '{enc.name}' has no module '{target}'") from None
    if isinstance(parent, nn.Sequential) and child.isdigit():
        parent[int(child)] = nn.Identity()
    else:
        setattr(parent, child, nn.Identity())
    device = checked_device(enc.device, key)
    return TorchvisionExtractor(frozen(model, device), params, device)
