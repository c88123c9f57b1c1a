"""Write a small image + audio dataset as plain folders, for `configs/folders_image_audio.yaml`:

    <out>/images/<digit>/<n>.png   scikit-learn's 1797 handwritten digits (8x8, scaled to 24x24, grey PNG)
    <out>/audio/<digit>/<n>.wav|.flac   synthetic "spoken digit" clips, 60 per class

Each clip is a voiced sound: a fundamental that rises or falls (by class parity) through two formant
bands set by the digit, at a random speaking pitch (+-12%), length (0.35-0.6 s) and loudness, in
noise at 0-12 dB SNR; half are 8 kHz mono WAV, half 16 kHz stereo FLAC. Neighbouring digits overlap in
pitch, so audio alone is far from perfect. Nothing is downloaded.

    python experiments/make_av_folders.py data/av_digits"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def clip(digit: int, rng: np.random.Generator, rate: int) -> np.ndarray:
    seconds = rng.uniform(0.35, 0.6)
    t = np.arange(int(seconds * rate)) / rate
    pitch = (110 + 9 * digit) * rng.uniform(0.88, 1.12)
    glide = 1 + (0.25 if digit % 2 else -0.2) * t / seconds
    phase = 2 * np.pi * np.cumsum(pitch * glide) / rate
    f1, f2 = 300 + 70 * digit, 2300 - 110 * digit
    voice = sum(np.sin(h * phase) / h * (np.exp(-((h * pitch - f1) / 250) ** 2) + np.exp(-((h * pitch - f2) / 350) ** 2) + 0.05)
                for h in range(1, 30) if h * pitch < rate / 2)
    envelope = np.sin(np.pi * t / seconds) ** 0.5
    voice = voice * envelope / (np.abs(voice).max() + 1e-9)
    snr_db = rng.uniform(0, 12)
    noise = rng.normal(0, np.sqrt(np.mean(voice**2) / 10 ** (snr_db / 10)), voice.shape)
    return (0.7 * rng.uniform(0.5, 1.0) * (voice + noise) / (np.abs(voice + noise).max() + 1e-9)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--clips-per-class", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import soundfile as sf
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for n, (img, label) in enumerate(zip(digits.images, digits.target)):
        folder = args.out / "images" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (img / 16.0 * 255).astype(np.uint8)
        Image.fromarray(pixels).resize((24, 24), Image.Resampling.BILINEAR).save(folder / f"{n}.png")
    rng = np.random.default_rng(args.seed)
    for digit in range(10):
        folder = args.out / "audio" / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(args.clips_per_class):
            if n % 2:
                wave = clip(digit, rng, 16000)
                sf.write(folder / f"{n}.flac", np.stack([wave, wave], axis=1), 16000)
            else:
                sf.write(folder / f"{n}.wav", clip(digit, rng, 8000), 8000, subtype="PCM_16")
    print(f"wrote {len(digits.target)} images and {10 * args.clips_per_class} clips under {args.out}")


if __name__ == "__main__":
    main()
