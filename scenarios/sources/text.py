"""A text modality generated per class: token sequences where a class shows through its signature words."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData, Split, check_budget, check_counts

PAD = 0


@dataclass
class TextParams:
    n_classes: int = 10  # classes of generated sentences
    n_train_per_class: int = 120  # training sentences per class
    n_test_per_class: int = 40  # test sentences per class
    vocab_size: int = 96  # distinct words (ids; 0 pads)
    length: int = 12  # tokens per sentence
    signature_size: int = 4  # words that belong to each class
    signal_rate: float = 0.35  # chance that a position holds one of the class's words
    noise: float = 0.1  # chance that a position holds a uniformly random word


def class_sentences(labels: np.ndarray, params: TextParams, rng: np.random.Generator) -> np.ndarray:
    """int64 [N, length] token ids (0 pads the tail) for the given labels."""
    check_counts(n_classes=params.n_classes, length=params.length, signature_size=params.signature_size)
    if params.vocab_size > 2**20:
        raise ValueError(f"vocab_size: at most {2**20}, got {params.vocab_size}")
    check_budget(len(labels) * params.length, "n_*_per_class x n_classes x length")
    n_sig = params.n_classes * params.signature_size
    if params.vocab_size <= n_sig + 1:
        raise ValueError(f"vocab_size must exceed n_classes * signature_size + 1 = {n_sig + 1}")
    signatures = 1 + np.arange(n_sig).reshape(params.n_classes, params.signature_size)
    filler = np.arange(1 + n_sig, params.vocab_size)
    n, length = len(labels), params.length
    tokens = rng.choice(filler, size=(n, length))
    use_sig = rng.random((n, length)) < params.signal_rate
    sig_words = signatures[labels][np.arange(n)[:, None], rng.integers(0, params.signature_size, (n, length))]
    tokens = np.where(use_sig, sig_words, tokens)
    noisy = rng.random((n, length)) < params.noise
    tokens = np.where(noisy, rng.integers(1, params.vocab_size, (n, length)), tokens)
    lengths = rng.integers(length // 2, length + 1, n)
    tokens[np.arange(length)[None, :] >= lengths[:, None]] = PAD
    return tokens.astype(np.int64)


def text_spec(params: TextParams) -> ModalitySpec:
    return ModalitySpec("text", (params.length,), "int64", params.vocab_size)


@SOURCES.register("text", params=TextParams, generated=True)
def text_source(params: TextParams, seed: int) -> SourceData:
    """Generated sentences: modality `text` (token ids, 0 = padding)."""
    check_counts(n_train_per_class=params.n_train_per_class, n_test_per_class=params.n_test_per_class)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(params.n_classes), params.n_train_per_class)
    yt = np.repeat(np.arange(params.n_classes), params.n_test_per_class)
    spec = {"text": text_spec(params)}
    return SourceData(
        Split({"text": class_sentences(y, params, rng)}, y), Split({"text": class_sentences(yt, params, rng)}, yt), spec
    )
