"""Spoken "words" from a source-filter synthesiser, as log-mel spectrograms (generated; nothing is downloaded).

Each word is two vowels said one after the other with a pause of random length between them, at a random
onset; the ten words are five pairs of vowels, each in both orders (a-i and i-a). Vowels are steady formants
(F1-F3) voiced by a glottal pulse train at the speaker's pitch plus breath noise, recorded with background
noise. Speakers differ in pitch and vocal-tract length (all formants scaled by one factor) and fall in four
groups: low adult, high adult, child, and a breathy low group. The two words of a pair hold the same
sounds and differ only in their order, across a pause of varying length: features that pool local
patterns over time (random convolution kernels) tell the pair but hardly the order, which a trained
network learns.

`speakers` chooses the groups sampled (all four by default); a domain-incremental stream takes one group
per experience. Modality `signal` [n_mels, frames], log mel power, standardised per mel band by the
training split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData, Split
from scenarios.sources.decode import mel_filters, power_spectrogram

SAMPLE_RATE = 8000
VOWELS = {  # F1, F2, F3 (Hz) of an adult of vocal-tract factor 1
    "a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010), "o": (570, 840, 2410), "u": (300, 870, 2240),
}
WORDS = ["ai", "ia", "ui", "iu", "au", "ua", "eo", "oe", "ae", "ea"]  # class k is WORDS[k]: pairs in both orders
SPEAKER_GROUPS = {  # vocal-tract factor range, pitch range (Hz), breath-noise level
    0: ((0.85, 0.95), (95.0, 135.0), 0.05),
    1: ((1.00, 1.10), (170.0, 230.0), 0.05),
    2: ((1.15, 1.25), (240.0, 300.0), 0.05),
    3: ((0.90, 1.00), (110.0, 150.0), 0.35),
}


@dataclass
class FormantWordsParams:
    n_train_per_class: int = 200  # training clips per word
    n_test_per_class: int = 60  # test clips per word
    speakers: list[int] = field(default_factory=lambda: [0, 1, 2, 3])  # speaker groups sampled (0-3)
    duration: float = 1.0  # seconds per clip
    vowel_s: list[float] = field(default_factory=lambda: [0.08, 0.14])  # length of each vowel (s), drawn per vowel
    pause_s: list[float] = field(default_factory=lambda: [0.15, 0.45])  # pause between vowels (s), drawn per pause
    snr_db: float = 10.0  # background noise
    variability: float = 0.05  # relative std of each vowel's formants per utterance (a speaker's own vowels)
    vtl_jitter: float = 0.1  # relative std of each utterance's vocal-tract factor around its group's range
    n_mels: int = 32  # mel bands of the spectrogram
    hop_length: int = 128  # samples between frames (at 8 kHz: 16 ms)


def _check(p: FormantWordsParams) -> None:
    if p.n_train_per_class < 1 or p.n_test_per_class < 1:
        raise ValueError("n_train_per_class and n_test_per_class must be at least 1")
    if not p.speakers or any(s not in SPEAKER_GROUPS for s in p.speakers):
        raise ValueError(f"speakers: choose among {sorted(SPEAKER_GROUPS)}, got {list(p.speakers)}")
    if not 0.0 <= p.vtl_jitter <= 0.5:
        raise ValueError(f"vtl_jitter: must lie in [0, 0.5], got {p.vtl_jitter}")
    if not 0.0 <= p.variability <= 0.5:
        raise ValueError(f"variability: must lie in [0, 0.5], got {p.variability}")
    for name in ("vowel_s", "pause_s"):
        lo, hi = getattr(p, name)
        if not 0.0 <= lo <= hi <= 0.5:
            raise ValueError(f"{name}: need 0 <= low <= high <= 0.5 seconds, got {getattr(p, name)}")
    if not 0.2 <= p.duration <= 2.0 or not np.isfinite(p.snr_db) or not 8 <= p.n_mels <= 128 or not 32 <= p.hop_length <= 512:
        raise ValueError("duration in [0.2, 2] s, a finite snr_db, n_mels in [8, 128] and hop_length in [32, 512] are required")


def synthesize(words: np.ndarray, p: FormantWordsParams, rng: np.random.Generator) -> np.ndarray:
    """Waveforms [N, samples] of the words `words` (class indices), each by a random speaker of `p.speakers`:
    its vowels held steady one after the other, with a pause of random length between them."""
    n, T = len(words), int(round(p.duration * SAMPLE_RATE))
    t = np.arange(T) / SAMPLE_RATE
    group = rng.choice(p.speakers, size=n)
    vtl = np.array([rng.uniform(*SPEAKER_GROUPS[g][0]) for g in group]) * np.exp(p.vtl_jitter * rng.standard_normal(n))
    f0 = np.array([rng.uniform(*SPEAKER_GROUPS[g][1]) for g in group])
    breath = np.array([SPEAKER_GROUPS[g][2] for g in group])
    formants = np.full((n, 3, T), 1000.0)
    envelope = np.zeros((n, T))
    for i, w in enumerate(words):
        vowels = WORDS[int(w)]
        seg = rng.uniform(*p.vowel_s, len(vowels))
        gaps = rng.uniform(*p.pause_s, len(vowels) - 1)
        onset = rng.uniform(0.02, max(0.02, p.duration - seg.sum() - gaps.sum() - 0.02))
        starts = onset + np.concatenate([[0.0], np.cumsum(seg[:-1] + gaps)])
        for v, s0, length in zip(vowels, starts, seg, strict=True):
            inside = (t >= s0) & (t < s0 + length)
            target = np.asarray(VOWELS[v], dtype=float) * vtl[i] * np.exp(p.variability * rng.standard_normal(3))
            formants[i][:, inside] = target[:, None]
            envelope[i, inside] = np.sin(np.pi * (t[inside] - s0) / length) ** 0.5
    pitch = f0[:, None] * (1 + 0.02 * rng.standard_normal((n, T)))
    phase = np.cumsum(pitch / SAMPLE_RATE, axis=1)
    pulses = (np.diff(np.floor(phase), axis=1, prepend=0.0) > 0).astype(float)
    source = (pulses + breath[:, None] * rng.standard_normal((n, T))) * envelope
    # filter: three two-pole resonators in cascade, coefficients following the formant tracks
    y = source
    for f, bandwidth in enumerate((80.0, 110.0, 160.0)):
        r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
        a1, a2 = 2 * r * np.cos(2 * np.pi * formants[:, f] / SAMPLE_RATE), -r * r
        out, y1, y2 = np.zeros_like(y), np.zeros(n), np.zeros(n)
        for k in range(T):
            y0 = y[:, k] + a1[:, k] * y1 + a2 * y2
            out[:, k], y2, y1 = y0, y1, y0
        y = out
    y /= np.abs(y).max(axis=1, keepdims=True) + 1e-9
    noise = rng.standard_normal((n, T)) * np.sqrt(np.mean(y**2, axis=1, keepdims=True) / 10 ** (p.snr_db / 10))
    return (y + noise).astype(np.float32)


def log_mel(waves: np.ndarray, p: FormantWordsParams) -> np.ndarray:
    """[N, n_mels, frames] log mel power of waveforms [N, samples]."""
    bank = mel_filters(SAMPLE_RATE, 256, p.n_mels, 0.0, None)
    return np.stack([np.log(bank @ power_spectrogram(w, 256, p.hop_length) + 1e-6) for w in waves]).astype(np.float32)


@SOURCES.register("formant_words", params=FormantWordsParams, generated=True)
def formant_words(params: FormantWordsParams, seed: int) -> SourceData:
    """Synthesised spoken words (10 classes, vowel glides) by speakers of four groups: modality `signal`
    [n_mels, frames] (log mel)."""
    _check(params)
    rng = np.random.default_rng(seed + 211)
    labels = {s: np.repeat(np.arange(len(WORDS)), n) for s, n in (("train", params.n_train_per_class), ("test", params.n_test_per_class))}
    feats = {s: log_mel(synthesize(y, params, rng), params) for s, y in labels.items()}
    mean, std = feats["train"].mean(axis=(0, 2), keepdims=True), feats["train"].std(axis=(0, 2), keepdims=True) + 1e-6
    splits = {s: Split({"signal": ((x - mean) / std).astype(np.float32)}, labels[s]) for s, x in feats.items()}
    shape = splits["train"].inputs["signal"].shape[1:]
    return SourceData(splits["train"], splits["test"], {"signal": ModalitySpec("signal", tuple(shape))})
