"""Multimodal digits: an image, a 1-D signal and a sentence per sample, paired by label (as AV-MNIST pairs
MNIST with spoken digits). Each modality of a sample is, with probability `corrupt_prob`, swapped for one of
another class, so that no single modality suffices and fusing them pays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData, Split, check_budget, check_counts, stratified_split
from scenarios.sources.digits import DigitsParams, digit_images
from scenarios.sources.mnist1d import Mnist1dParams, mnist1d_arrays
from scenarios.sources.text import TextParams, class_sentences, text_spec

ALL = ("image", "signal", "text")


@dataclass
class MultimodalDigitsParams:
    modalities: list[str] = field(default_factory=lambda: list(ALL))  # any of image, signal, text
    n_train_per_class: int = 100  # training samples per class
    n_test_per_class: int = 40  # test samples per class
    corrupt_prob: float = 0.3  # each modality of a sample is swapped for another class's with this probability
    image_noise: float = 0.15  # Gaussian noise on the images
    signal_noise: float = 0.3  # Gaussian noise on the signals
    text_signal_rate: float = 0.35  # chance that a text position holds one of the class's words


def _pools(params: MultimodalDigitsParams, seed: int) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per modality, disjoint train and test pools of (arrays, labels)."""
    images, labels = digit_images(DigitsParams(noise_std=params.image_noise), seed)
    tr, te = stratified_split(labels, 0.3, seed)
    x, y, xt, yt = mnist1d_arrays(Mnist1dParams(), seed)
    rng = np.random.default_rng([seed, 3])
    x = x + rng.normal(0, params.signal_noise, x.shape).astype(np.float32)
    xt = xt + rng.normal(0, params.signal_noise, xt.shape).astype(np.float32)
    return {
        "image": {"train": (images[tr], labels[tr]), "test": (images[te], labels[te])},
        "signal": {"train": (x, y), "test": (xt, yt)},
    }


def _pair(
    pools: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    split: str,
    n_per_class: int,
    params: MultimodalDigitsParams,
    text: TextParams,
    rng: np.random.Generator,
) -> Split:
    labels = np.repeat(np.arange(10), n_per_class)
    n = len(labels)
    inputs: dict[str, np.ndarray] = {}
    for modality in params.modalities:
        # the class whose content each sample shows: its own, or (corrupted) another one
        shown = labels.copy()
        corrupt = rng.random(n) < params.corrupt_prob
        shown[corrupt] = (labels[corrupt] + rng.integers(1, 10, corrupt.sum())) % 10
        if modality == "text":
            inputs["text"] = class_sentences(shown, text, rng)
            continue
        arrays, pool_labels = pools[modality][split]
        picks = np.empty(n, dtype=np.int64)
        for c in range(10):
            members = np.flatnonzero(pool_labels == c)
            rows = np.flatnonzero(shown == c)
            picks[rows] = rng.choice(members, size=len(rows), replace=len(rows) > len(members))
        inputs[modality] = arrays[picks]
    return Split(inputs, labels)


@SOURCES.register("multimodal_digits", params=MultimodalDigitsParams, generated=True)
def multimodal_digits_source(params: MultimodalDigitsParams, seed: int) -> SourceData:
    """Digits paired across modalities `image` (1x8x8), `signal` (1x40), `text` (12 tokens)."""
    unknown = sorted(set(params.modalities) - set(ALL))
    if unknown or not params.modalities:
        raise ValueError(f"modalities must be a non-empty subset of {list(ALL)}, got {params.modalities}")
    check_counts(n_train_per_class=params.n_train_per_class, n_test_per_class=params.n_test_per_class)
    check_budget(10 * max(params.n_train_per_class, params.n_test_per_class) * 64, "n_*_per_class x 10 classes x 64")
    pools = _pools(params, seed)
    text = TextParams(signal_rate=params.text_signal_rate)
    rng = np.random.default_rng([seed, 4])
    train = _pair(pools, "train", params.n_train_per_class, params, text, rng)
    test = _pair(pools, "test", params.n_test_per_class, params, text, rng)
    specs = {"image": ModalitySpec("image", (1, 8, 8)), "signal": ModalitySpec("signal", (1, 40)), "text": text_spec(text)}
    return SourceData(train, test, {m: specs[m] for m in params.modalities})
