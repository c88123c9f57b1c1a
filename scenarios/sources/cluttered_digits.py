"""Handwritten digits on a larger canvas, at a random position and scale, among clutter made of fragments
of other digits (generated from scikit-learn's bundled 8x8 digits; nothing is downloaded).

A class is a shape wherever it lies, so features of the raw pixels that are not translation invariant
(the random projections class statistics use) see mostly position and clutter, while a convolutional
network learns the shape: a stream where fixed features fall short of what training learns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData, Split, stratified_split


@dataclass
class ClutteredDigitsParams:
    canvas: int = 24  # side of the square image
    min_scale: float = 1.0  # each digit is resized from 8x8 by a factor drawn in [min_scale, max_scale]
    max_scale: float = 1.5  # largest resize factor (8 * max_scale must fit the canvas)
    fragments: int = 3  # clutter: 4x4 crops of other digits pasted at random places
    noise_std: float = 0.05  # additive Gaussian pixel noise, clipped to [0, 1]
    renders: int = 4  # training renderings of each training digit (each at its own place, scale and clutter)
    test_fraction: float = 0.3  # share of the digits held out for testing (stratified, from the run seed)


def _check(p: ClutteredDigitsParams) -> None:
    if p.canvas < 8 or p.canvas > 128:
        raise ValueError(f"canvas: must lie in [8, 128], got {p.canvas}")
    if not 0.5 <= p.min_scale <= p.max_scale or p.max_scale * 8 > p.canvas:
        raise ValueError(f"min_scale, max_scale: need 0.5 <= min_scale <= max_scale and 8 * max_scale <= canvas, "
                         f"got {p.min_scale}, {p.max_scale} on a canvas of {p.canvas}")
    if p.fragments < 0 or p.renders < 1 or not np.isfinite(p.noise_std) or p.noise_std < 0:
        raise ValueError("fragments >= 0, renders >= 1 and a finite noise_std >= 0 are required")
    if not 0.0 < p.test_fraction < 1.0:
        raise ValueError(f"test_fraction: must lie in (0, 1), got {p.test_fraction}")


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of a square image (h, h) to (side, side)."""
    h = image.shape[0]
    pos = (np.arange(side) + 0.5) * h / side - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, h - 1)
    hi = np.clip(lo + 1, 0, h - 1)
    w = np.clip(pos - lo, 0.0, 1.0)
    rows = image[lo] * (1 - w)[:, None] + image[hi] * w[:, None]
    return rows[:, lo] * (1 - w)[None] + rows[:, hi] * w[None]


def render(digits: np.ndarray, which: np.ndarray, p: ClutteredDigitsParams, rng: np.random.Generator) -> np.ndarray:
    """[len(which), 1, canvas, canvas] float32 in [0, 1]: digit `digits[which[i]]` placed and cluttered with
    fragments of the digits `which` names (a split's clutter comes from that split's own digits)."""
    out = np.zeros((len(which), p.canvas, p.canvas), dtype=np.float32)
    for i, k in enumerate(which):
        canvas = out[i]
        for _ in range(p.fragments):  # clutter first, the digit on top
            src = digits[which[rng.integers(len(which))]]
            r, c = rng.integers(0, 5, size=2)
            frag = src[r:r + 4, c:c + 4] * rng.uniform(0.5, 1.0)
            y, x = rng.integers(0, p.canvas - 3, size=2)
            np.maximum(canvas[y:y + 4, x:x + 4], frag, out=canvas[y:y + 4, x:x + 4])
        side = int(round(8 * rng.uniform(p.min_scale, p.max_scale)))
        glyph = _resize(digits[k], side)
        y, x = rng.integers(0, p.canvas - side + 1, size=2)
        np.maximum(canvas[y:y + side, x:x + side], glyph, out=canvas[y:y + side, x:x + side])
    out += rng.normal(0.0, p.noise_std, out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)[:, None]


@SOURCES.register("cluttered_digits", params=ClutteredDigitsParams, generated=True)
def cluttered_digits(params: ClutteredDigitsParams, seed: int) -> SourceData:
    """scikit-learn digits at random places and scales among clutter: modality `image` (1 x canvas x canvas)."""
    from sklearn.datasets import load_digits

    _check(params)
    data = load_digits()
    digits, labels = (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)
    tr, te = stratified_split(labels, params.test_fraction, seed)
    rng = np.random.default_rng(seed + 101)
    train_which = np.repeat(tr, params.renders)
    train = Split({"image": render(digits, train_which, params, rng)}, labels[train_which])
    test = Split({"image": render(digits, te, params, rng)}, labels[te])
    return SourceData(train, test, {"image": ModalitySpec("image", (1, params.canvas, params.canvas))})
