"""The registry of pretrained encoder kinds, the contract of an extractor, config checks and the image
preprocessing the vision kinds share. Light to import: the config loader checks `pretrained` with it."""

from __future__ import annotations

import importlib.metadata
import math
import os
import pickle
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lifelong_moe.errors import ConfigError, DataError, first_line
from lifelong_moe.registry import Registry, resolve_params

if TYPE_CHECKING:
    import torch

    from lifelong_moe.config.schema import EncoderConfig
    from scenarios.modality import ModalitySpec

EXTRACTORS: Registry[Any] = Registry(
    "pretrained encoder",
    builtins=("lifelong_moe.features.timm_encoder", "lifelong_moe.features.torchvision_encoder", "lifelong_moe.features.hf_encoder"),
)
"""`factory(enc: EncoderConfig, params, spec: ModalitySpec, key: str) -> Extractor`. Metadata: `modalities`
(the modality kinds it reads), `packages` (whose versions enter the cache key), `needs_name`, and `check`:
`check(enc, params, key) -> weights files`, run offline before the cache is read (nothing built or
downloaded), which refuses what must never load and returns the files whose content the weights are."""


class Extractor(Protocol):
    """A loaded, frozen encoder: `encode` maps one batch of a modality (as its source gives it, on the
    extractor's device) to features [B, D]."""

    device: torch.device

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...


def check_pretrained(pretrained: dict[str, EncoderConfig]) -> None:
    """At config load: every `pretrained.<modality>` names a registered kind with valid params."""
    for modality, enc in pretrained.items():
        key = f"pretrained.{modality}"
        if modality == "mask":
            raise ConfigError(f"{key}: 'mask' is reserved and cannot name a modality")
        EXTRACTORS.get(enc.kind, f"{key}.kind")
        resolve_params(EXTRACTORS, enc.kind, enc.params, f"{key}.params")
        if EXTRACTORS.meta(enc.kind).get("needs_name") and not enc.name:
            raise ConfigError(f"{key}.name: a {enc.kind} encoder needs the architecture's name")
        if enc.batch_size < 1:
            raise ConfigError(f"{key}.batch_size: must be at least 1, got {enc.batch_size}")
        if not enc.weights:
            raise ConfigError(f"{key}.weights: give the local weights file or folder")


_FILE_NAMES = {"image_size": "size", "mean": "image_mean", "std": "image_std"}
MAX_IMAGE_SIDE = 4096  # an encoder's input side; larger would allocate gigabytes per batch


def check_image_settings(size: Sequence[Any], mean: Sequence[Any], std: Sequence[Any], key: str, where: str = "") -> None:
    """An encoder's preprocessing, from its params (`key.params.<name>`) or a preprocessor file (`where`):
    a size of two sides in 1..4096, three finite means and three positive finite stds (a std of 0
    divides by zero)."""
    def at(name: str) -> str:  # a preprocessor file calls them size, image_mean, image_std
        return f"{key}.weights: {where}: {_FILE_NAMES[name]}" if where else f"{key}.params.{name}"

    if size and (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_IMAGE_SIDE for v in size)):
        raise DataError(f"{at('image_size')}: must be [height, width] in 1..{MAX_IMAGE_SIDE}, got {list(size)}")
    for name, values in (("mean", mean), ("std", std)):
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        if values and (len(values) != 3 or len(numbers) != 3):
            raise DataError(f"{at(name)}: must be three finite numbers (one per RGB channel), got {list(values)}")
    if std and min(std) <= 0:
        raise DataError(f"{at('std')}: must be positive (images are divided by it), got {list(std)}")


def check_file_encoder(enc: EncoderConfig, params: Any, key: str, forbidden: Sequence[str], interpolations: Sequence[str]) -> list[Path]:
    """What timm and torchvision encoders share, checked offline: no builder argument that would load
    other weights (`forbidden`), valid preprocessing, and a weights file."""
    bad = [a for a in params.model_args if a in forbidden]
    if bad:
        raise DataError(f"{key}.params.model_args.{bad[0]}: not allowed; the weights come from `weights` only")
    check_image_settings(params.image_size, params.mean, params.std, key)
    if params.interpolation not in interpolations:
        raise DataError(f"{key}.params.interpolation: must be bilinear or bicubic, got '{params.interpolation}'")
    return weights_file(Path(enc.weights).expanduser(), key)


def checked_device(device: str, key: str) -> torch.device:
    """The device an encoder runs on, refused in one line when this machine does not have it; checked
    whether or not the features come from the cache, so a config does not pass here and fail elsewhere."""
    import torch

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DataError(f"{key}.device: '{device}' but torch sees no CUDA GPU on this machine; use auto or cpu")
        if (resolved.index or 0) >= count:
            raise DataError(f"{key}.device: '{device}' but this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DataError(f"{key}.device: 'mps' but this machine has no Apple GPU torch can use; use auto or cpu")
    return resolved


def device_key(device: torch.device) -> str:
    """What of the device enters the feature cache key: its kind, and for a GPU its model (a GPU's
    kernels round differently from the CPU's, so its features may differ in the last bits)."""
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def weights_file(path: Path, key: str) -> list[Path]:
    """A weights file must be a regular file (not a folder, device or FIFO, which /proc/self or /dev/zero
    would be): checked before it is hashed or read."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise DataError(f"{key}.weights: not found: {path} (a local weights file; nothing is downloaded)") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{key}.weights: {path} is {'a folder' if stat.S_ISDIR(mode) else 'not a regular file'}; "
                        f"give the weights file (.safetensors or .pth)")
    return [path]


def versions(packages: Sequence[str]) -> dict[str, str]:
    """Installed versions (they enter the cache key: another library version may compute other numbers)."""
    out = {}
    for name in ("torch", *packages):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def resolve_device(device: str) -> torch.device:
    """`auto`: this process's GPU when there is one (under DDP each process encodes on its own local
    rank's GPU), else the CPU."""
    import os

    import torch

    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device(device)


def prepare_images(x: torch.Tensor, size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                   interpolation: str = "bilinear") -> torch.Tensor:
    """Images [B, C, H, W] in [0, 1] -> the encoder's input: grey repeated to RGB, resized to `size`,
    normalised by `mean` and `std`."""
    import torch
    import torch.nn.functional as F

    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W)
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) != (h, w):
        mode = interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"
        x = F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=True)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def check_modality(kind: str, spec: ModalitySpec, key: str) -> None:
    accepted = EXTRACTORS.meta(kind).get("modalities", ())
    if spec.kind not in accepted:
        raise DataError(f"{key}: a {kind} encoder reads {' or '.join(accepted)} modalities; this one is {spec.kind} {list(spec.shape)}")
    if spec.kind == "image" and spec.shape[0] not in (1, 3):
        raise DataError(f"{key}: a pretrained encoder reads grey or RGB images; this one has {spec.shape[0]} channels")


def read_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch checkpoint (read with weights_only=True, so a
    checkpoint cannot run code); `state_dict`/`model` wrappers and DDP's `module.` prefix are removed."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # every reader fails its own way; all mean the file is unusable
        if refused_pickle(err):
            raise DataError(f"{key}: {path}: holds Python objects other than tensors (a pickle); refused without running it") from None
        raise DataError(f"{key}: {path}: not a readable weights file ({type(err).__name__}: {first_line(err)})") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{key}: {path}: holds no state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def refused_pickle(err: BaseException) -> bool:
    """Whether torch.load(weights_only=True) refused a pickle naming objects other than tensors (it
    stopped before any of them was built), as opposed to bytes that are no pickle at all."""
    return isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err)  # torch: "unsupported GLOBAL <name>"


def load_exactly(model: torch.nn.Module, state: dict[str, torch.Tensor], key: str, path: Path, what: str) -> None:
    """Load every weight: a missing, unexpected or misshapen key is an error naming the file (partly loaded
    weights would give features that are silently wrong)."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        detail = next((ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln), first_line(err))
        raise DataError(f"{key}: {path} does not fit {what}: {detail}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} weights missing (e.g. {result.missing_keys[0]})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
    if problems:
        raise DataError(f"{key}: {path} does not fit {what}: {'; '.join(problems)}")


def frozen(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    model.eval().requires_grad_(False)
    return model.to(device)
