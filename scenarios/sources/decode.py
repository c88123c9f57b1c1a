"""Decoding of image and audio files (or bytes) into fixed-shape arrays, shared by the file sources.

Images: Pillow; EXIF orientation applied; grey, RGB, palette and alpha modes handled (alpha is
composited over white); resized to `size` by stretching or by resizing the shorter side and cropping the
centre; stored as uint8 [C, H, W] (the source hands out float32 in [0, 1]).

Audio: `soundfile` (WAV, FLAC, OGG, ...); channels averaged to mono; resampled with soxr (what
librosa's `soxr_hq` calls); cut or zero-padded to `duration` seconds; then a log-mel spectrogram
[n_mels, frames] (numpy, equal to librosa's `melspectrogram` defaults: a test checks it, and no numba
compile at start-up) or the raw waveform [1, samples]. torchaudio is not used: its releases pin older
torch versions."""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from scenarios.errors import DataError
from scenarios.progress import Ticker

IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"]
AUDIO_EXTENSIONS = [".wav", ".flac", ".ogg", ".aiff", ".aif"]


@dataclass
class ImagePrep:
    size: list[int] = field(default_factory=lambda: [32, 32])  # [height, width]
    channels: int = 3  # 1 (grey) or 3 (RGB)
    fit: str = "crop"  # crop: resize the shorter side, then cut the centre; stretch: resize to size


@dataclass
class AudioPrep:
    sample_rate: int = 16000  # clips are resampled to this rate (Hz)
    duration: float = 1.0  # seconds; longer clips are cut, shorter ones zero-padded at the end
    features: str = "logmel"  # logmel: [n_mels, frames]; waveform: [1, samples]
    n_mels: int = 40  # log-mel: mel bands
    n_fft: int = 400  # log-mel: FFT window length in samples
    hop_length: int = 160  # log-mel: samples between frames
    fmin: float = 0.0  # log-mel: lowest band edge (Hz)
    fmax: float | None = None  # log-mel: highest band edge (Hz); None: sample_rate / 2


MAX_WORKERS = 256  # decoding threads: beyond it, a typo that would start thousands of threads
MAX_IMAGE_SIDE = 4096  # pixels per side of a decoded sample (48 MB as RGB): beyond it a typo, not a data set


def check_image_prep(prep: ImagePrep, key: str) -> None:
    if len(prep.size) != 2 or min(prep.size) < 1:
        raise DataError(f"{key}size: expected [height, width] of positive integers, got {list(prep.size)}")
    if max(prep.size) > MAX_IMAGE_SIDE:
        raise DataError(f"{key}size: at most {MAX_IMAGE_SIDE} pixels per side (every sample is held decoded), got {list(prep.size)}")
    if prep.channels not in (1, 3):
        raise DataError(f"{key}channels: must be 1 (grey) or 3 (RGB), got {prep.channels}")
    if prep.fit not in ("crop", "stretch"):
        raise DataError(f"{key}fit: must be crop or stretch, got '{prep.fit}'")


MAX_SAMPLE_RATE = 10**6  # Hz, of a setting or a file: beyond it, a mistake or a damaged header
MAX_AUDIO_SAMPLES = 2**27  # a clip of at most 134 million samples (an hour at 32 kHz); each one is held in memory


def check_audio_prep(prep: AudioPrep, key: str) -> None:
    if not 1 <= prep.sample_rate <= MAX_SAMPLE_RATE:
        raise DataError(f"{key}sample_rate: must lie in 1..{MAX_SAMPLE_RATE} Hz, got {prep.sample_rate}")
    if not (math.isfinite(prep.duration) and prep.duration > 0) or prep.sample_rate * prep.duration > MAX_AUDIO_SAMPLES:
        raise DataError(f"{key}duration: must be a positive number of seconds of at most {MAX_AUDIO_SAMPLES:,} samples, "
                        f"got {prep.duration}")
    if prep.features not in ("logmel", "waveform"):
        raise DataError(f"{key}features: must be logmel or waveform, got '{prep.features}'")
    if prep.features != "logmel":
        return
    if prep.n_mels < 1 or prep.n_fft < 2 or prep.hop_length < 1:
        raise DataError(f"{key}n_mels, n_fft and hop_length must be positive")
    if prep.n_fft > 2**16 or prep.n_mels > 1024:
        raise DataError(f"{key}n_fft (at most 65536) and n_mels (at most 1024) are too large: {prep.n_fft}, {prep.n_mels}")
    nyquist = prep.sample_rate / 2
    top = nyquist if prep.fmax is None else prep.fmax
    if not (math.isfinite(prep.fmin) and 0 <= prep.fmin < nyquist):
        raise DataError(f"{key}fmin: must lie in [0, {nyquist:g}) Hz (half the sample rate), got {prep.fmin}")
    if not (math.isfinite(top) and prep.fmin < top <= nyquist):
        raise DataError(f"{key}fmax: must lie in ({prep.fmin:g}, {nyquist:g}] Hz (above fmin, at most half the sample "
                        f"rate), got {prep.fmax}")
    empty = np.flatnonzero(mel_filters(prep.sample_rate, prep.n_fft, prep.n_mels, prep.fmin, prep.fmax).max(axis=1) <= 0)
    if len(empty):  # a band between two FFT bins sees nothing: a constant feature
        raise DataError(f"{key}n_mels: {len(empty)} of the {prep.n_mels} mel bands fall between the FFT bins of n_fft="
                        f"{prep.n_fft} between {prep.fmin:g} and {top:g} Hz and would always be empty; lower n_mels or "
                        f"raise n_fft")


def image_shape(prep: ImagePrep) -> tuple[int, int, int]:
    return (prep.channels, int(prep.size[0]), int(prep.size[1]))


def audio_shape(prep: AudioPrep) -> tuple[int, int]:
    n = int(round(prep.sample_rate * prep.duration))
    if prep.features == "waveform":
        return (1, n)
    return (prep.n_mels, 1 + (n + 2 * (prep.n_fft // 2) - prep.n_fft) // prep.hop_length)  # centred frames


def decode_image(src: str | Path | bytes, prep: ImagePrep, name: str) -> np.ndarray:
    """uint8 [C, H, W]; `name` (a path or a sample) is what an error names. An image of more pixels than
    Pillow's `Image.MAX_IMAGE_PIXELS` (89 million: a decompression bomb, a few kB that inflate to
    gigabytes) is refused from its header, before it is decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    _bombs_are_errors()
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_mode(img, prep.channels)
            h, w = int(prep.size[0]), int(prep.size[1])
            if prep.fit == "crop":
                img = ImageOps.fit(img, (w, h), method=Image.Resampling.BILINEAR)
            elif img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        size = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(size.group(1)):,} pixels" if size else "too many pixels"
        raise DataError(f"{name}: refused: an image of {pixels}, more than the {Image.MAX_IMAGE_PIXELS:,} that are "
                        f"decoded (Pillow's MAX_IMAGE_PIXELS; a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise DataError(f"{name}: not a readable image ({type(err).__name__}: {_short(err)})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()  # (C, H, W)


def _bombs_are_errors() -> None:
    """Pillow only warns between MAX_IMAGE_PIXELS and twice that (and the warning would print lines of
    its own): raise it instead, for every image. `filterwarnings` replaces an identical filter, so this
    adds one entry however often it runs."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def _to_mode(img: Any, channels: int) -> Any:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit, 32-bit or float grey: scale to 8 bits
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("it holds NaN or infinite pixel values")
        if img.mode.startswith("I;16") or a.max() > 255:
            top = 65535.0
        else:  # floats in [0, 1] are the usual float image; [0, 255] an 8-bit one stored wider
            top = 1.0 if img.mode == "F" and a.max() <= 1.0 else 255.0
        img = Image.fromarray(np.clip(a / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("L" if channels == 1 else "RGB")


MAX_AMPLITUDE = 1e6  # samples are read as floats in [-1, 1] (int16 scale, 32768, still passes); far beyond is damage


def decode_audio(src: str | Path | bytes, prep: AudioPrep, name: str) -> np.ndarray:
    """float32 [n_mels, frames] (log-mel) or [1, samples] (waveform)."""
    import soundfile as sf

    data = src if isinstance(src, bytes) else None
    try:
        if data is None:
            with open(src, "rb") as fh:
                data = fh.read(MAX_AUDIO_SAMPLES * 8 + (1 << 20))  # bounded: a clip is never larger than this
        short = _truncated_wav(data)
        if short:
            raise DataError(f"{name}: the file is truncated: {short}")
        with sf.SoundFile(io.BytesIO(data)) as clip:
            if clip.frames > MAX_AUDIO_SAMPLES:
                raise DataError(f"{name}: {clip.frames:,} samples, more than the {MAX_AUDIO_SAMPLES:,} read per clip")
            wave, rate = clip.read(dtype="float32", always_2d=True), clip.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError, EOFError) as err:
        detail = getattr(err, "error_string", None) or _short(err)  # libsndfile's own words, not the buffer's repr
        raise DataError(f"{name}: not a readable audio file ({type(err).__name__}: {detail})") from None
    if wave.shape[0] == 0:
        raise DataError(f"{name}: the audio file holds no samples")
    if not 1 <= rate <= MAX_SAMPLE_RATE:  # a damaged header: resampled from it, the clip would become silence
        raise DataError(f"{name}: the file says its sample rate is {rate:,} Hz, outside 1..{MAX_SAMPLE_RATE:,} (a damaged header?)")
    return audio_features(wave.mean(axis=1), int(rate), prep, name)


def _truncated_wav(data: bytes) -> str:
    """Why a RIFF/WAVE file is cut short (its data chunk promises more bytes than follow), or "".
    libsndfile reads such a file without a word, as whatever samples are there."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return ""
    order = "little" if data[:4] == b"RIFF" else "big"
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos: pos + 4], int.from_bytes(data[pos + 4: pos + 8], order)
        if chunk == b"data":
            held = len(data) - pos - 8
            if 0 < size < 0xFFFFFFFF and size > held:  # 0 and 0xFFFFFFFF: sizes a streaming writer leaves open
                return f"its data chunk promises {size:,} bytes of audio, the file holds {held:,}"
            return ""
        pos += 8 + size + (size & 1)
    return ""  # no data chunk: libsndfile says the file is not readable


def audio_features(wave: np.ndarray, rate: int, prep: AudioPrep, name: str) -> np.ndarray:
    """Mono float waveform at `rate` -> the configured features (resampled, cut or padded)."""
    wave = np.asarray(wave, dtype=np.float32)
    if not np.isfinite(wave).all():
        raise DataError(f"{name}: the audio holds NaN or infinite samples")
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > MAX_AMPLITUDE:
        raise DataError(f"{name}: a sample of {peak:.3g}, far outside the range [-1, 1] audio is read in (at most "
                        f"{MAX_AMPLITUDE:g} is accepted); the file is damaged or not audio")
    if rate != prep.sample_rate:
        import soxr

        wave = soxr.resample(wave, rate, prep.sample_rate, quality="HQ").astype(np.float32)
    n = int(round(prep.sample_rate * prep.duration))
    wave = wave[:n] if len(wave) >= n else np.pad(wave, (0, n - len(wave)))
    if prep.features == "waveform":
        return wave[None].astype(np.float32)  # (1, samples)
    mel = mel_filters(prep.sample_rate, prep.n_fft, prep.n_mels, prep.fmin, prep.fmax) @ power_spectrogram(wave, prep.n_fft, prep.hop_length)
    return np.log(mel + 1e-6).astype(np.float32)  # (n_mels, frames)


def power_spectrogram(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|^2 [1 + n_fft/2, frames] as librosa computes it (centred, zero-padded, periodic Hann)."""
    padded = np.pad(wave.astype(np.float64), n_fft // 2)
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]  # (frames, n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return (np.abs(np.fft.rfft(frames * window, axis=1)) ** 2).T


_MEL_CACHE: dict[tuple, np.ndarray] = {}


def mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """Slaney-style mel filter bank [n_mels, 1 + n_fft/2], area-normalised (librosa's default)."""
    key = (sr, n_fft, n_mels, fmin, fmax)
    if key not in _MEL_CACHE:
        fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
        mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(sr / 2.0 if fmax is None else fmax), n_mels + 2))
        fdiff = np.diff(mel_f)
        ramps = np.subtract.outer(mel_f, fft_freqs)
        lower = -ramps[:n_mels] / fdiff[:n_mels, None]
        upper = ramps[2:] / fdiff[1:, None]
        weights = np.maximum(0.0, np.minimum(lower, upper))
        weights *= (2.0 / (mel_f[2:] - mel_f[:n_mels]))[:, None]
        _MEL_CACHE[key] = weights
    return _MEL_CACHE[key]


_F_SP, _MIN_LOG_HZ, _LOGSTEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0


def _hz_to_mel(f: float | np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / _F_SP
    return np.where(f >= _MIN_LOG_HZ, _MIN_LOG_HZ / _F_SP + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    min_log_mel = _MIN_LOG_HZ / _F_SP
    return np.where(m >= min_log_mel, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - min_log_mel)), _F_SP * m)


T = TypeVar("T")


def check_workers(workers: int) -> None:
    """Decoding threads: 0 (up to 8) or a count; checked before a cache hit could skip the decode."""
    if not 0 <= workers <= MAX_WORKERS:
        raise DataError(f"workers: must lie in 0..{MAX_WORKERS} decoding threads (0: up to 8), got {workers}")


def parallel_map(fn: Callable[[Any], T], items: Sequence[Any], workers: int = 0, what: str = "") -> list[T]:
    """`fn` over `items` in threads (Pillow, libsndfile and soxr release the GIL); order kept, and the
    first error (in item order) is raised. With `what`, progress lines tell how far it is (`scenarios.progress`)."""
    workers = workers or min(8, os.cpu_count() or 1)
    if what:
        ticker = Ticker(what, len(items))
        inner = fn

        def fn(x: Any) -> T:
            out = inner(x)
            ticker.add()
            return out

    if workers <= 1 or len(items) < 16:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def _short(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
