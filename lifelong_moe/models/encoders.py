"""Per-modality encoders: each maps one modality's batch to a [B, dim] embedding. Chosen by modality kind."""

from __future__ import annotations

import torch
from torch import nn

from lifelong_moe.registry import Registry
from scenarios.modality import ModalitySpec

ENCODERS: Registry = Registry("modality encoder")
"""`factory(spec, dim) -> nn.Module`, keyed by `ModalitySpec.kind`."""


@ENCODERS.register("image")
class ImageEncoder(nn.Module):
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


@ENCODERS.register("signal")
class SignalEncoder(nn.Module):
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


@ENCODERS.register("text")
class TextEncoder(nn.Module):
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


@ENCODERS.register("tabular")
class TabularEncoder(nn.Module):
    """MLP for [B, D] feature vectors."""

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        d = int(torch.tensor(spec.shape).prod())
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_encoder(spec: ModalitySpec, dim: int) -> nn.Module:
    return ENCODERS.get(spec.kind, "modality kind")(spec, dim)
