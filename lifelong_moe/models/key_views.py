"""Fixed, parameter-free views of each modality's raw input in which task keys are fitted: they never
drift, so keys fitted at experience 1 still mean the same at experience 20."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scenarios.modality import ModalitySpec

MAX_SIDE = 16  # images are average-pooled to at most 16 x 16 per channel
MAX_LENGTH = 256  # signals to at most 256 steps per channel
MAX_VOCAB = 4096  # token ids are hashed into at most 4096 bag-of-words bins


def key_view(spec: ModalitySpec, x: torch.Tensor) -> torch.Tensor:
    """(B, F) float features of one modality's raw batch."""
    if spec.kind == "image":
        h, w = x.shape[-2:]
        x = F.adaptive_avg_pool2d(x.float(), (min(h, MAX_SIDE), min(w, MAX_SIDE)))
    elif spec.kind == "signal":
        x = F.adaptive_avg_pool1d(x.float(), min(x.shape[-1], MAX_LENGTH))
    elif spec.kind == "text":
        bins = min(spec.vocab_size or MAX_VOCAB, MAX_VOCAB)
        ids = x.long() % bins
        counts = torch.zeros(x.shape[0], bins, device=x.device).scatter_add_(1, ids, (x != 0).float())
        return counts
    return x.float().reshape(x.shape[0], -1)
