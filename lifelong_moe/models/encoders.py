"""Per-modality encoders, chosen by modality kind: each maps one modality's batch to a (B, dim) embedding.

A modality kind is one registration here: the encoder class, and optionally its fixed feature map of the
raw input, in which class statistics are kept: `fixed_features(spec, width, seed)` (default: a random ReLU
projection of the flattened sample). Fixed maps never drift, so statistics gathered at experience 1 still
mean the same at experience 20. The list of kinds a stream may use is this registry's names."""

from __future__ import annotations

import math

import torch
from torch import nn

from lifelong_moe.errors import ConfigError
from lifelong_moe.registry import Registry
from lifelong_moe.statistics.fixed_features import BagOfWords, RandomReLUFeatures, RocketFeatures
from scenarios.modality import ModalitySpec

ENCODERS: Registry[type[nn.Module]] = Registry("modality encoder")
"""`cls(spec, dim) -> nn.Module`, keyed by `ModalitySpec.kind`; `cls.fixed_features(spec, width, seed)` is optional."""


class ModalityEncoder(nn.Module):
    """Base of the built-in encoders: default fixed feature map of the raw sample."""

    @staticmethod
    def fixed_features(spec: ModalitySpec, width: int, seed: int) -> nn.Module:
        """A random feature space of `width` features for class statistics (a module with `out_dim`)."""
        return RandomReLUFeatures(math.prod(spec.shape), width, seed)


@ENCODERS.register("image")
class ImageEncoder(ModalityEncoder):
    """Small CNN for [B, C, H, W] images: three 3x3 conv layers (32, 64, 64 channels) with two 2x2 max-pools,
    pooled to 2x2, then a linear layer. Joint training on 8x8 digits reaches 0.98 with it."""

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        c = spec.shape[0]
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64 * 4, dim), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)



@ENCODERS.register("signal")
class SignalEncoder(ModalityEncoder):
    """1-D CNN for [B, C, L] signals, after MNIST-1D's convolutional baseline: three strided conv layers
    (32 channels), pooled to 5 steps, then a linear layer. Joint training on MNIST-1D reaches 0.93 with it."""

    min_length = 3  # steps the first convolution (width 5, padding 1) needs

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        c = spec.shape[0]
        self.net = nn.Sequential(
            nn.Conv1d(c, 32, 5, stride=2, padding=1), nn.ReLU(), nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool1d(5), nn.Flatten(), nn.Linear(32 * 5, dim), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


    @staticmethod
    def fixed_features(spec: ModalitySpec, width: int, seed: int) -> nn.Module:
        """Random convolution kernels (ROCKET): far more separable than a random projection for signals."""
        return RocketFeatures(tuple(spec.shape), max(width // 2, 1), seed)


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
    def fixed_features(spec: ModalitySpec, width: int, seed: int) -> nn.Module:
        """Word frequencies (token ids hashed into at most `width` bins)."""
        return BagOfWords(min(spec.vocab_size or width + 1, width + 1))


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
    cls = encoder_class(spec, modality)
    shortest = getattr(cls, "min_length", 0)
    if len(spec.shape) >= 2 and spec.shape[-1] < shortest:
        raise ConfigError(f"modality '{modality}': samples of {spec.shape[-1]} step(s) along their last axis, fewer than the "
                          f"{shortest} its encoder needs (audio: a longer duration, a higher sample_rate or a smaller hop_length)")
    return cls(spec, dim)


def fixed_features(spec: ModalitySpec, width: int, seed: int) -> nn.Module:
    """The fixed random feature space of a modality's kind, for class statistics."""
    make = getattr(encoder_class(spec), "fixed_features", None)
    return make(spec, width, seed) if make is not None else ModalityEncoder.fixed_features(spec, width, seed)
