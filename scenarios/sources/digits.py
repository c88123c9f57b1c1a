"""Handwritten digit images bundled with scikit-learn (1797 images, 8x8, 10 classes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData, Split, stratified_split


@dataclass
class DigitsParams:
    test_fraction: float = 0.3  # share of each class held out for testing
    noise_std: float = 0.0  # additive Gaussian noise, for domain shifts
    rotate90: int = 0  # number of quarter turns, for domain shifts
    invert: bool = False  # white digits on black become black on white, for domain shifts


def digit_images(params: DigitsParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 images as float32 [N, 1, 8, 8] in [0, 1] (plus the domain transform), and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    if params.rotate90 % 4:
        images = np.rot90(images, k=params.rotate90 % 4, axes=(2, 3)).copy()
    if params.invert:
        images = 1.0 - images
    if params.noise_std > 0:
        rng = np.random.default_rng(seed + 17)
        images = images + rng.normal(0, params.noise_std, images.shape).astype(np.float32)
    return images, data.target.astype(np.int64)


@SOURCES.register("digits", params=DigitsParams, generated=True)
def digits_source(params: DigitsParams, seed: int) -> SourceData:
    """scikit-learn handwritten digits: modality `image` (1x8x8)."""
    if not 0.0 < params.test_fraction < 1.0:
        raise ValueError(f"test_fraction: must lie in (0, 1), got {params.test_fraction}")
    if not (np.isfinite(params.noise_std) and params.noise_std >= 0):
        raise ValueError(f"noise_std: must be a finite number >= 0, got {params.noise_std}")
    images, labels = digit_images(params, seed)
    tr, te = stratified_split(labels, params.test_fraction, seed)
    spec = {"image": ModalitySpec("image", (1, 8, 8))}
    return SourceData(Split({"image": images[tr]}, labels[tr]), Split({"image": images[te]}, labels[te]), spec)
