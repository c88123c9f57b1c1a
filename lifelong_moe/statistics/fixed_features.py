"""Fixed feature spaces of raw inputs, in which class statistics are kept: random, never trained, so a
class's statistics gathered at experience 1 still mean the same at experience 20.

- `RandomReLUFeatures`: relu(z W + b) of the flattened input z, standardised by the mean and scale of the
  first batch it is fitted on (RanPAC-style random projection; McDonnell et al. 2023).
- `RocketFeatures`: random convolution kernels of random length, dilation, bias and padding over 1-D
  signals or 2-D images, each giving the proportion of positive values and the maximum of its response
  (ROCKET; Dempster et al. 2020). On MNIST-1D they separate classes far better than a random projection.
- `BagOfWords`: token counts over the vocabulary, divided by the sequence length (0 pads).

Every module is deterministic given its seed; its random weights are buffers, so checkpoints carry them.
Shape key: B samples, C channels, L length, H x W image, F features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RandomReLUFeatures(nn.Module):
    """(B, ...) -> (B, width). `fit(x)` once, on the first data seen, sets the standardisation."""

    def __init__(self, in_dim: int, width: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(in_dim, width, generator=g) / math.sqrt(in_dim))
        self.register_buffer("shift", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("fitted", torch.tensor(False))
        self.out_dim = width

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        if bool(self.fitted):
            return
        z = x.reshape(len(x), -1).double()
        self.shift.copy_(z.mean(0))
        self.scale.copy_((z - z.mean(0)).pow(2).mean().sqrt().clamp_min(1e-8))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.reshape(len(x), -1).float() - self.shift.float()) / self.scale.float()
        return F.relu(z @ self.weight)


class RocketFeatures(nn.Module):
    """Random convolution kernels over (B, C, L) signals or (B, C, H, W) images -> (B, 2 * n_kernels):
    per kernel, the proportion of positive values and the maximum of its response. Each sample is
    z-normalised first. Kernels sharing a shape (length, dilation, padding) run as one convolution."""

    def __init__(self, shape: tuple[int, ...], n_kernels: int, seed: int) -> None:
        super().__init__()
        self.dims = len(shape) - 1  # 1: signals, 2: images
        if self.dims not in (1, 2):
            raise ValueError(f"random convolution features need (C, L) or (C, H, W) samples, got {shape}")
        channels, side = shape[0], min(shape[1:])
        rng = torch.Generator().manual_seed(seed)
        lengths = (7, 9, 11) if self.dims == 1 else (3, 5)
        groups: dict[tuple[int, int, int], list[tuple[torch.Tensor, float]]] = {}
        for _ in range(n_kernels):
            length = lengths[int(torch.randint(len(lengths), (1,), generator=rng))]
            length = min(length, side if side % 2 else side - 1) if side > 1 else 1
            weight = torch.randn(channels, *([length] * self.dims), generator=rng)
            keep = torch.rand(channels, generator=rng) < 2.0 / channels  # a random subset of channels
            keep[int(torch.randint(channels, (1,), generator=rng))] = True
            weight = (weight - weight.mean()) * keep.view(-1, *([1] * self.dims))
            bias = float(torch.rand((), generator=rng) * 2 - 1)
            top = math.log2(max((side - 1) / max(length - 1, 1), 1.0))
            dilation = max(1, int(2 ** (float(torch.rand((), generator=rng)) * top)))
            padding = (length - 1) * dilation // 2 if bool(torch.rand((), generator=rng) < 0.5) else 0
            if side + 2 * padding - (length - 1) * dilation < 1:
                padding = (length - 1) * dilation // 2
            groups.setdefault((length, dilation, padding), []).append((weight, bias))
        self.shapes = sorted(groups)
        for k, key in enumerate(self.shapes):
            self.register_buffer(f"w{k}", torch.stack([w for w, _ in groups[key]]))
            self.register_buffer(f"b{k}", torch.tensor([b for _, b in groups[key]]))
        self.out_dim = 2 * n_kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = tuple(range(1, x.dim()))
        x = x.float()
        x = (x - x.mean(axes, keepdim=True)) / (x.std(axes, keepdim=True) + 1e-6)
        conv = F.conv1d if self.dims == 1 else F.conv2d
        parts = []
        for k, (_, dilation, padding) in enumerate(self.shapes):
            out = conv(x, getattr(self, f"w{k}"), getattr(self, f"b{k}"), padding=padding, dilation=dilation).flatten(2)
            parts.append(torch.stack([(out > 0).float().mean(-1), out.amax(-1)], -1).flatten(1))  # (B, 2k)
        return torch.cat(parts, 1)


class BagOfWords(nn.Module):
    """(B, L) token ids -> (B, V - 1) counts of ids 1..V-1 over the sequence length (0 pads); larger ids
    are hashed into the V - 1 bins."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = max(vocab_size, 2)
        self.out_dim = self.vocab_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = torch.where(x > 0, (x.long() - 1) % (self.vocab_size - 1) + 1, torch.zeros_like(x, dtype=torch.long))
        counts = torch.zeros(len(x), self.vocab_size, device=x.device).scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float))
        counts = counts[:, 1:]
        return counts / counts.sum(1, keepdim=True).clamp_min(1.0)
