"""Training-time augmentation of a multimodal batch, by the shape of each modality: images (B, C, H, W) and
signals (B, C, L) are shifted by a random whole number of pixels or steps along their spatial or time
axes, zero-filled, at most `fraction` of each axis; tokens and feature vectors are left alone. A class
that is a shape wherever it lies (a digit on a canvas, a word in a clip) is taught to be one.
Uses torch's global generator, so it follows the run's seed."""

from __future__ import annotations

from typing import Any

import torch

from scenarios.modality import MASK_KEY


def _shift(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Each sample of x (B, C, *axes) moved by its own random offset along every axis after C."""
    axes = list(range(2, x.dim()))
    out = x
    for axis in axes:
        n = x.shape[axis]
        limit = int(fraction * n)
        if limit < 1:
            continue
        offset = torch.randint(-limit, limit + 1, (x.shape[0],), device=x.device)  # (B,)
        index = torch.arange(n, device=x.device).view(1, n) - offset.view(-1, 1)  # (B, n): source position
        valid = (index >= 0) & (index < n)
        shape = [x.shape[0]] + [1] * (x.dim() - 1)
        shape[axis] = n
        gathered = torch.gather(out, axis, index.clamp(0, n - 1).view(shape).expand_as(out))
        out = gathered * valid.view(shape).to(x.dtype)
    return out


def shift_augment(inputs: dict[str, Any], fraction: float) -> dict[str, Any]:
    """A copy of `inputs` with every floating image or signal modality randomly shifted (see module)."""
    if fraction <= 0:
        return inputs
    return {m: _shift(x, fraction) if m != MASK_KEY and isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() in (3, 4) else x
            for m, x in inputs.items()}
