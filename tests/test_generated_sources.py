"""The generated streams where fixed features fall short: cluttered digits and synthesised spoken words.
Each is deterministic for a seed, shaped as declared, and carries the property it is built for."""

from __future__ import annotations

import numpy as np
import pytest

from scenarios.sources.cluttered_digits import ClutteredDigitsParams, cluttered_digits
from scenarios.sources.formant_words import WORDS, FormantWordsParams, formant_words, log_mel, synthesize


def test_cluttered_digits_are_deterministic_shaped_and_place_the_digit_anywhere():
    params = ClutteredDigitsParams(renders=1, fragments=0, noise_std=0.0)
    a, b, c = cluttered_digits(params, 0), cluttered_digits(params, 0), cluttered_digits(params, 1)
    x = a.train.inputs["image"]
    assert x.shape[1:] == (1, 24, 24) and x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert np.array_equal(x, b.train.inputs["image"]) and not np.array_equal(x, c.train.inputs["image"])
    assert sorted(np.unique(a.train.labels)) == list(range(10)) and len(a.test) == 539
    # without clutter every image's ink sits in one box of side 8..12, and those boxes are spread over the canvas
    rows = np.array([np.nonzero(im[0].any(1))[0][[0, -1]] for im in x])
    assert ((rows[:, 1] - rows[:, 0]) < 12).all()
    assert rows[:, 0].min() == 0 and rows[:, 1].max() == 23


def test_cluttered_digits_refuse_a_digit_larger_than_the_canvas():
    with pytest.raises(ValueError, match="max_scale"):
        cluttered_digits(ClutteredDigitsParams(canvas=12, max_scale=2.0), 0)


def test_spoken_words_hold_their_vowels_in_order():
    """'ai' and 'ia' hold the same vowels: /i/ (F2 near 2.3 kHz) against /a/ (F2 near 1.1 kHz) rises over the
    voiced frames of 'ai' and falls over those of 'ia'."""
    params = FormantWordsParams(snr_db=40.0, variability=0.0, vtl_jitter=0.0, speakers=[1])
    words = np.array([WORDS.index("ai")] * 8 + [WORDS.index("ia")] * 8)
    mel = log_mel(synthesize(words, params, np.random.default_rng(0)), params)  # (16, n_mels, frames)
    contrast = mel[:, 23:26].mean(1) - mel[:, 14:16].mean(1)  # bands near 2.3 kHz minus bands near 1.1 kHz
    rise = []
    for k in range(len(words)):
        voiced = np.nonzero(mel[k].mean(0) > np.median(mel[k].mean(0)))[0]
        half = len(voiced) // 2
        rise.append(contrast[k, voiced[half:]].mean() - contrast[k, voiced[:half]].mean())
    assert min(rise[:8]) > 0 > max(rise[8:]), np.round(rise, 2)


def test_spoken_words_are_deterministic_standardised_and_shaped():
    params = FormantWordsParams(n_train_per_class=3, n_test_per_class=2, speakers=[1, 2])
    a, b = formant_words(params, 5), formant_words(params, 5)
    x = a.train.inputs["signal"]
    assert x.shape == (30, 32, 63) and np.array_equal(x, b.train.inputs["signal"])
    assert np.allclose(x.mean(axis=(0, 2)), 0.0, atol=1e-4) and np.allclose(x.std(axis=(0, 2)), 1.0, atol=1e-3)
    assert a.modalities["signal"].shape == (32, 63) and len(a.test) == 20
    with pytest.raises(ValueError, match="speakers"):
        formant_words(FormantWordsParams(speakers=[7]), 0)


def test_holdout_replaces_the_test_split_with_part_of_the_training_split():
    from scenarios.config import SourceConfig
    from scenarios.sources.base import load_source
    from scenarios.sources.digits import DigitsParams
    from scenarios.sources.holdout import HoldoutParams, holdout

    inner = load_source("digits", DigitsParams(), 3)
    params = HoldoutParams(source=SourceConfig("digits"), fraction=0.25)
    data = holdout(params, 3)
    assert len(data.train) + len(data.test) == len(inner.train)
    both = np.concatenate([data.train.inputs["image"], data.test.inputs["image"]]).reshape(len(inner.train), -1)
    assert np.array_equal(np.sort(both, axis=0), np.sort(inner.train.inputs["image"].reshape(len(inner.train), -1), axis=0))
    held = np.bincount(data.test.labels, minlength=10) / np.bincount(inner.train.labels, minlength=10)
    assert np.all(np.abs(held - 0.25) < 0.05)  # stratified
    with pytest.raises(ValueError, match="fraction"):
        holdout(HoldoutParams(source=SourceConfig("digits"), fraction=1.0), 0)
