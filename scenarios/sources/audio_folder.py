"""Your audio clips: one sub-folder per class of .wav/.flac (any format libsndfile reads), or a CSV of
path,label; same layouts as `image_folder`.

Decoded once with `soundfile`, mixed to mono, resampled to `sample_rate`, cut or zero-padded to
`duration` seconds, then turned into a log-mel spectrogram (a `signal` modality [n_mels, frames],
standardized per mel band by the training split) or kept as the raw waveform ([1, samples]); cached on disk."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from scenarios.cache import files_fingerprint
from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData
from scenarios.sources.decode import (
    AUDIO_EXTENSIONS,
    AudioPrep,
    audio_shape,
    check_audio_prep,
    check_workers,
    decode_audio,
    parallel_map,
)
from scenarios.sources.files import POOLS, Pool, cached_decode, split_pool, stems
from scenarios.sources.image_folder import file_listing


@dataclass
class AudioFolderParams:
    root: str | None = None  # root/<class>/<clip> or root/{train,test}/<class>/<clip>
    index: str | None = None  # instead of root: a CSV with columns path,label[,split] (paths relative to it)
    modality: str = "audio"  # the modality's name in the stream
    sample_rate: int = 16000  # clips are resampled to this rate (Hz)
    duration: float = 1.0  # seconds: longer clips are cut, shorter ones zero-padded
    features: str = "logmel"  # logmel | waveform
    n_mels: int = 40  # log-mel: mel bands
    n_fft: int = 400  # log-mel: FFT window length in samples
    hop_length: int = 160  # log-mel: samples between frames
    fmin: float = 0.0  # log-mel: lowest band edge (Hz)
    fmax: float | None = None  # log-mel: highest band edge (Hz); None: sample_rate / 2
    standardize: bool = True  # log-mel only: scale each mel band by the training split's mean and std
    extensions: list[str] = field(default_factory=lambda: list(AUDIO_EXTENSIONS))  # file extensions read (others are skipped)
    test_fraction: float = 0.2  # when the files carry no train/test split
    cache: bool = True  # keep the decoded arrays on disk (keyed by the files' contents and these settings)
    workers: int = 0  # decoding threads; 0: up to 8


def audio_prep(params: AudioFolderParams) -> AudioPrep:
    return AudioPrep(params.sample_rate, params.duration, params.features, params.n_mels, params.n_fft,
                     params.hop_length, params.fmin, params.fmax)


def audio_pool(params: AudioFolderParams, seed: int) -> Pool:
    prep = audio_prep(params)
    check_audio_prep(prep, "")
    check_workers(params.workers)
    key, files, labels, names, split = file_listing(params, params.extensions)

    def decode() -> dict[str, np.ndarray]:
        clips = parallel_map(lambda f: decode_audio(f, prep, f"{key}: {f}"), files, params.workers,
                             what=f"decoding the clips of {params.root or params.index}")
        return {"audio": np.stack(clips)}

    arrays = cached_decode("audio_folder", {"files": files_fingerprint(files), "prep": asdict(prep)}, params.cache, decode)
    spec = ModalitySpec("signal", audio_shape(prep))
    scaled = (params.modality,) if params.standardize and prep.features == "logmel" else ()
    return Pool({params.modality: arrays["audio"]}, labels, stems(files), split, {params.modality: spec}, names,
                f"{key}: {params.root or params.index}", standardize=scaled)


POOLS["audio_folder"] = audio_pool


@SOURCES.register("audio_folder", params=AudioFolderParams)
def audio_folder_source(params: AudioFolderParams, seed: int) -> SourceData:
    """Your audio: class sub-folders of .wav/.flac; resampled, cut/padded, log-mel or waveform, cached."""
    return split_pool(audio_pool(params, seed), params.test_fraction, seed)
