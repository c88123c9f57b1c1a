"""Self-supervised label augmentation (`model.params.self_labels`), as in PASS (Zhu et al., 2021): while an
experience trains, each batch is seen twice, as it is and with every sample transformed by a random
non-identity transform t; an extra head per experience learns the joint label (class, t) on both copies.
A group trained on two classes alone needs only what separates them; telling (class, transform) pairs
apart asks for what each class looks like, which is what the nested gate reads in the frozen group's
features to tell its classes from later ones. Nothing is stored: the transforms act on the batch.

Transforms, applied to every floating image (B, C, H, W) or signal (B, C, L) modality alike:
- rotations: 0, 90, 180, 270 degrees in the last two axes (square images only);
- flips: the last axis reversed (left-right for images, time for signals);
- dihedral: the four turns, each with and without a left-right flip (square images only).
Shape key: B samples, K classes of the experience, T transforms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong_moe.errors import ConfigError
from scenarios.modality import MASK_KEY


def _rotate(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = x
    for k in (1, 2, 3):
        out = torch.where((t == k).view(-1, *[1] * (x.dim() - 1)), torch.rot90(x, k, (-2, -1)), out)
    return out


def _flip(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.where((t == 1).view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)


def _dihedral(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    turned = _rotate(x, t % 4)
    return torch.where((t >= 4).view(-1, *[1] * (x.dim() - 1)), turned.flip(-1), turned)


# name -> (number of transforms, the identity included; transform of a modality tensor by t (B,); dims it accepts)
SELF_LABELS: dict[str, tuple[int, Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tuple[int, ...]]] = {
    "rotations": (4, _rotate, (4,)),
    "flips": (2, _flip, (3, 4)),
    "dihedral": (8, _dihedral, (4,)),
}


def _transformed(name: str, x: torch.Tensor) -> bool:
    return name != MASK_KEY and isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() in (3, 4)


def carries_transform(dtype: str, shape: tuple[int, ...] | list[int]) -> bool:
    """A floating image (C, H, W) or signal (C, L) modality: the transforms act on it; vectors and tokens
    are left as they are."""
    return dtype.startswith("float") and len(shape) in (2, 3)


def check_modality(kind: str, name: str, shape: tuple[int, ...]) -> str | None:
    """Why image or signal modality `name` (per-sample `shape`) cannot take transform set `kind`, or None."""
    _, _, dims = SELF_LABELS[kind]
    if len(shape) + 1 not in dims:
        return f"'{kind}' transforms images only; '{name}' has shape {list(shape)}"
    if kind in ("rotations", "dihedral") and shape[-1] != shape[-2]:
        return f"'{kind}' needs square images; '{name}' is {shape[-2]}x{shape[-1]}"
    return None


def transform_batch(kind: str, inputs: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor]:
    """A copy of `inputs` with each sample under a random non-identity transform, and the transforms (B,)."""
    T, apply, _ = SELF_LABELS[kind]
    first = next((x for m, x in inputs.items() if _transformed(m, x)), None)
    if first is None:
        raise ConfigError(f"model.params.self_labels: '{kind}' needs an image or signal modality; the batch has {sorted(inputs)}")
    t = torch.randint(1, T, (first.shape[0],), device=first.device)
    return {m: apply(x, t) if _transformed(m, x) else x for m, x in inputs.items()}, t


class SelfLabelHeads(nn.ModuleDict):
    """One linear head per experience over its (class, transform) pairs; used in training only."""

    def add(self, experience: int, dim: int, n_classes: int, kind: str) -> None:
        self[str(experience)] = nn.Linear(dim, n_classes * SELF_LABELS[kind][0])

    def loss(self, experience: int, pooled: torch.Tensor, local: torch.Tensor, t: torch.Tensor, kind: str) -> torch.Tensor:
        """Cross-entropy of the joint labels; `pooled` (2B, D): the plain copy then the transformed one,
        `local` (B,): each sample's class index within the experience, `t` (B,): the transforms."""
        T = SELF_LABELS[kind][0]
        joint = torch.cat([local * T, local * T + t])
        return F.cross_entropy(self[str(experience)](pooled), joint)


def plain_and_transformed(kind: str, inputs: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor]:
    """The batch followed by its transformed copy (2B samples per modality), and the transforms (B,)."""
    other, t = transform_batch(kind, inputs)
    return {m: _twice(x, other[m]) for m, x in inputs.items()}, t


def _twice(x: Any, y: Any) -> Any:
    """x then y along the sample axis, for tensors, per-sample lists and dicts of them (the presence mask)."""
    if isinstance(x, torch.Tensor):
        return torch.cat([x, y])
    if isinstance(x, dict):
        return {k: _twice(v, y[k]) for k, v in x.items()}
    return [*x, *y]
