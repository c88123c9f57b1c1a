"""torchvision image encoders: `torchvision.models.get_model(name, weights=None, **model_args)`, every
weight loaded from a local file (a state dict: .pth or .safetensors), the classifier replaced by the
identity (the last nn.Linear, or the module named by `strip`). ImageNet preprocessing unless set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong_moe.errors import DataError, first_line
from lifelong_moe.features.base import EXTRACTORS, frozen, load_exactly, prepare_images, read_state_dict, resolve_device


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


@EXTRACTORS.register("torchvision", params=TorchvisionEncoderParams, modalities=("image",), packages=("torchvision",), needs_name=True)
def torchvision_extractor(enc: Any, params: TorchvisionEncoderParams, spec: Any, key: str) -> TorchvisionExtractor:
    """torchvision classification models (ResNet, ViT, ConvNeXt, ...) from a local state dict."""
    import torchvision
    from torch import nn

    try:
        model = torchvision.models.get_model(enc.name, weights=None, **params.model_args)
    except (ValueError, TypeError, KeyError) as err:
        raise DataError(f"{key}.name: cannot build torchvision model '{enc.name}' ({first_line(err)})") from None
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
    device = resolve_device(enc.device)
    return TorchvisionExtractor(frozen(model, device), params, device)
