"""Per-modality encoders, chosen by modality kind: each maps one modality's batch to a (B, dim) embedding.

A modality kind is one registration here: the encoder class, and (optionally) its `key_view`, the fixed,
parameter-free view of the raw input in which statistics of the data are kept. Views never drift, so
statistics fitted at experience 1 still mean the same at experience 20. The list of kinds a stream may
use is this registry's names."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lifelong_moe.errors import ConfigError
from lifelong_moe.registry import Registry
from scenarios.modality import ModalitySpec

ENCODERS: Registry[type[nn.Module]] = Registry("modality encoder")
"""`cls(spec, dim) -> nn.Module`, keyed by `ModalitySpec.kind`; `cls.key_view(spec, x)` is optional."""

MAX_SIDE = 16  # images are average-pooled to at most 16 x 16 per channel in their key view
MAX_LENGTH = 256  # signals to at most 256 steps per channel
MAX_VOCAB = 4096  # token ids are hashed into at most 4096 bag-of-words bins


class ModalityEncoder(nn.Module):
    """Base of the built-in encoders: the default key view flattens the raw sample."""

    @staticmethod
    def key_view(spec: ModalitySpec, x: torch.Tensor) -> torch.Tensor:
        """(B, F) float features of one modality's raw batch."""
        return x.float().reshape(x.shape[0], -1)


@ENCODERS.register("image")
class ImageEncoder(ModalityEncoder):
    """Small conv net for [B, C, H, W] images."""

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        c = spec.shape[0]
        self.net = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32 * 4, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def key_view(spec: ModalitySpec, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return F.adaptive_avg_pool2d(x.float(), (min(h, MAX_SIDE), min(w, MAX_SIDE))).reshape(x.shape[0], -1)


@ENCODERS.register("signal")
class SignalEncoder(ModalityEncoder):
    """1-D conv over time for [B, C, L] signals."""

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        c = spec.shape[0]
        self.net = nn.Sequential(
            nn.Conv1d(c, 16, 5, padding=2), nn.ReLU(),
            nn.Conv1d(16, 32, 5, padding=2, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(32 * 4, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def key_view(spec: ModalitySpec, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool1d(x.float(), min(x.shape[-1], MAX_LENGTH)).reshape(x.shape[0], -1)


@ENCODERS.register("text")
class TextEncoder(ModalityEncoder):
    """Token embeddings averaged over non-padding tokens (id 0 pads) for [B, L] token ids."""

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        if spec.vocab_size is None:
            raise ValueError("a text modality needs vocab_size")
        self.embed = nn.Embedding(spec.vocab_size, dim, padding_idx=0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = (x != 0).unsqueeze(-1).to(self.embed.weight.dtype)  # (B, L, 1)
        pooled = (self.embed(x) * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, dim)
        return self.proj(pooled)

    @staticmethod
    def key_view(spec: ModalitySpec, x: torch.Tensor) -> torch.Tensor:
        """Bag of words over hashed token ids (padding not counted)."""
        bins = min(spec.vocab_size or MAX_VOCAB, MAX_VOCAB)
        ids = x.long() % bins
        return torch.zeros(x.shape[0], bins, device=x.device).scatter_add_(1, ids, (x != 0).float())


@ENCODERS.register("tabular")
class TabularEncoder(ModalityEncoder):
    """MLP for [B, D] feature vectors."""

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        d = int(torch.tensor(spec.shape).prod())
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def encoder_class(spec: ModalitySpec, modality: str = "") -> type[nn.Module]:
    """The registered encoder for a modality's kind; an unknown kind names the modality and the known kinds."""
    if spec.kind not in ENCODERS:
        where = f"modality '{modality}'" if modality else "a modality"
        raise ConfigError(f"{where} has kind '{spec.kind}', for which no encoder is registered; known kinds: {', '.join(ENCODERS)}")
    return ENCODERS.get(spec.kind)


def build_encoder(spec: ModalitySpec, dim: int, modality: str = "") -> nn.Module:
    return encoder_class(spec, modality)(spec, dim)


def key_view(spec: ModalitySpec, x: torch.Tensor) -> torch.Tensor:
    """(B, F) float features of one modality's raw batch, in its kind's fixed view (flattened by default)."""
    view = getattr(encoder_class(spec), "key_view", None)
    return view(spec, x) if view is not None else ModalityEncoder.key_view(spec, x)
