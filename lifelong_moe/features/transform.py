"""Turn a config's `pretrained` section into the per-source transform of `build_stream`: each modality
with a pretrained encoder is replaced, in train and test, by the encoder's features [N, D] (a `tabular`
modality), read from the feature cache when the same data went through the same encoder before.

Before the cache is looked at, each encoder is checked offline by its kind's `check` (name, params,
weights: a file, or a folder without code) and its device must exist here.

Cache key: SHA-256 of the modality's train and test arrays (its decoded data and preprocessing), the
encoder's kind, name and params, the SHA-256 of its weights file (or of an hf folder's own files), the
device it runs on (cpu, or the GPU's model: a GPU may round differently), and the torch / timm /
torchvision / transformers versions. A changed data file changes the decoded arrays, a changed weights
file its hash: either one misses the cache."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lifelong_moe.errors import ConfigError, DataError
from lifelong_moe.features.base import EXTRACTORS, Extractor, check_modality, checked_device, device_key, versions
from lifelong_moe.registry import resolve_params
from scenarios.cache import ArrayCache, array_digest, digest, digest_files, shared_memory
from scenarios.modality import ModalitySpec
from scenarios.progress import Ticker, reporting
from scenarios.sources.base import SourceData, Split

if TYPE_CHECKING:
    from lifelong_moe.config.schema import EncoderConfig, ExperimentConfig
    from scenarios.builder import Stream

FEATURE_FORMAT = 1  # bump when feature extraction changes, so older cache entries are not read


class FeatureTransform:
    """`transform(source_name, data) -> data` with pretrained features in place of raw modalities.
    Extractors load lazily (only on a cache miss) and once per modality; `records` keeps what was done."""

    def __init__(self, pretrained: dict[str, EncoderConfig], progress: Callable[[str], None] = print,
                 encode: bool = True) -> None:
        self.pretrained = pretrained
        self.progress = progress
        self.encode = encode  # False (validate): features not in the cache are planned, not computed
        self.used: set[str] = set()
        self.records: list[dict[str, Any]] = []
        self._extractors: dict[str, Extractor] = {}
        self.fingerprints: dict[str, dict[str, Any]] = {}  # per modality: its weights, for a resume to compare

    def __call__(self, source: str, data: SourceData) -> SourceData:
        inputs_train, inputs_test = dict(data.train.inputs), dict(data.test.inputs)
        modalities = dict(data.modalities)
        encoded = [m for m in self.pretrained if m in data.modalities]
        if not encoded:
            return data
        files = list(data.files)  # the source's own, and each encoder's weights: a resume refuses either changed
        for modality in encoded:
            enc = self.pretrained[modality]
            self.used.add(modality)
            train, test = self._features(source, modality, enc, data)
            inputs_train[modality], inputs_test[modality] = train, test
            modalities[modality] = ModalitySpec("tabular", (int(train.shape[1]),))
            files.append(self.fingerprints[modality])
        return replace(data, train=Split(inputs_train, data.train.labels), test=Split(inputs_test, data.test.labels),
                       modalities=modalities, files=files)

    def check_used(self) -> None:
        unused = sorted(set(self.pretrained) - self.used)
        if unused:
            raise ConfigError(f"pretrained.{unused[0]}: no source of the stream has a modality '{unused[0]}'")

    def _features(self, source: str, modality: str, enc: EncoderConfig, data: SourceData) -> tuple[np.ndarray, np.ndarray]:
        key = f"pretrained.{modality}"
        spec = data.modalities[modality]
        check_modality(enc.kind, spec, key)
        weights = Path(enc.weights).expanduser()
        if not weights.exists():
            raise DataError(f"{key}.weights: not found: {enc.weights} (a local {'folder written by save_pretrained' if enc.kind == 'hf' else 'weights file'}; "
                            f"nothing is downloaded, so a hub name such as 'org/model' needs saving to a folder first)")
        params = resolve_params(EXTRACTORS, enc.kind, enc.params, f"{key}.params")
        # offline checks first, whether or not the cache holds the features: the name, the params, the
        # weights (a file, or a folder without code), the device
        files = EXTRACTORS.meta(enc.kind)["check"](enc, params, key) if "check" in EXTRACTORS.meta(enc.kind) else [weights]
        device = checked_device(enc.device, key)
        weights_digest = digest_files(files, weights if weights.is_dir() else None)
        self.fingerprints[modality] = {"param": f"{key}.weights", "path": str(weights), "mtime_ns": 0, "sha256": weights_digest,
                                       "size": sum(f.stat().st_size for f in files)}
        start = time.perf_counter()
        train_x, test_x = data.train.inputs[modality], data.test.inputs[modality]
        cache_key = {
            "format": FEATURE_FORMAT,
            "modality": spec.to_dict(),
            "data": array_digest({"train": train_x, "test": test_x}),
            "encoder": {"kind": enc.kind, "name": enc.name, "params": asdict(params) if is_dataclass(params) else params,
                        "weights": weights_digest, "device": device_key(device),
                        "versions": versions(EXTRACTORS.meta(enc.kind).get("packages", ()))},
        }
        cache = ArrayCache("features", enc.cache)
        shared = SharedRows(("features", digest({k: v for k, v in cache_key.items() if k != "data"})), train_x, test_x)
        arrays = shared.arrays() or cache.load(cache_key, prefix=f"{enc.kind}-{modality}-")
        hit = arrays is not None
        label = f"{enc.kind} {enc.name or weights.name}"
        n = len(train_x) + len(test_x)
        estimate = None
        if arrays is None and not self.encode:
            arrays, estimate = self._dry_run(source, modality, enc, params, spec, key, train_x, test_x)
        elif arrays is None:
            extractor = self._extractor(modality, enc, params, spec, key)
            ticker = Ticker(f"encoding {modality} of source '{source}' with {label}", n)
            arrays = {"train": encode_array(extractor, train_x, enc.batch_size, ticker),
                      "test": encode_array(extractor, test_x, enc.batch_size, ticker)}
            cache.store(cache_key, arrays, prefix=f"{enc.kind}-{modality}-")
        if estimate is None:
            shared.keep(arrays)
        seconds = time.perf_counter() - start
        for split in ("train", "test"):  # NaN weights, or an encoder that overflows, give silently wrong features
            bad = np.flatnonzero(~np.isfinite(arrays[split]).all(axis=1))
            if len(bad):
                raise DataError(f"{key}: the {enc.kind} encoder gave NaN or infinite features for {split} sample {int(bad[0])} "
                                f"of source '{source}' (weights {enc.weights})")
        dim = int(arrays["train"].shape[1])
        self.records.append({"source": source, "modality": modality, "kind": enc.kind, "name": enc.name, "dim": dim,
                             "n_train": len(train_x), "n_test": len(test_x), "cached": hit, "seconds": seconds,
                             "planned_seconds": estimate})
        head = f"[lifelong-moe] pretrained {modality} ({label}) on source '{source}': {len(train_x)} train + {len(test_x)} test samples -> {dim}-d features"
        if estimate is not None:
            where = f"caches them in {cache.folder}" if enc.cache else "does not cache them (cache: false)"
            self.progress(f"{head}; weights loaded and a batch encoded; not in the cache: the first run encodes them "
                          f"(roughly {_duration(estimate)} here) and {where}")
        else:
            how = "read from the cache" if hit else ("computed and cached" if enc.cache else "computed (cache off)")
            self.progress(f"{head}, {how} in {seconds:.2f}s")
        return arrays["train"], arrays["test"]

    def _dry_run(self, source: str, modality: str, enc: EncoderConfig, params: Any, spec: ModalitySpec, key: str,
                 train_x: np.ndarray, test_x: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        """Without encoding the data: the encoder built and its weights loaded, one small batch encoded (its
        output's width, its numbers finite) and timed for a rough estimate of the whole; features of that width
        as zeros stand in for the rest (the model's checks only need their shape)."""
        extractor = self._extractor(modality, enc, params, spec, key)
        sample = np.concatenate([train_x[:2], test_x[:2]])
        encode_array(extractor, sample[:1], 1)  # builds lazy state; its time is not typical
        t0 = time.perf_counter()
        probe = encode_array(extractor, sample, len(sample))  # (k, D)
        per_sample = (time.perf_counter() - t0) / len(sample)
        bad = np.flatnonzero(~np.isfinite(probe).all(axis=1))
        if len(bad):
            split, index = ("train", int(bad[0])) if bad[0] < len(train_x[:2]) else ("test", int(bad[0]) - len(train_x[:2]))
            raise DataError(f"{key}: the {enc.kind} encoder gave NaN or infinite features for {split} sample {index} "
                            f"of source '{source}' (weights {enc.weights})")
        dim = probe.shape[1]
        # batches amortise per-call cost, so this overestimates a little; it is meant as an order of magnitude
        estimate = per_sample * (len(train_x) + len(test_x))
        return {"train": np.zeros((len(train_x), dim), np.float32), "test": np.zeros((len(test_x), dim), np.float32)}, estimate

    def _extractor(self, modality: str, enc: EncoderConfig, params: Any, spec: ModalitySpec, key: str) -> Extractor:
        if modality not in self._extractors:
            import torch

            # building an architecture draws its initial weights: not from the run's random numbers, or a run
            # would start from other numbers when its features come from the cache than when they do not
            with torch.random.fork_rng(devices=[]):
                self._extractors[modality] = EXTRACTORS.get(enc.kind, f"{key}.kind")(enc, params, spec, key)
        return self._extractors[modality]


class SharedRows:
    """Features kept per sample while `scenarios.cache.shared_in_process` is open (a comparison): another seed
    splits the same samples into other train and test sets, whose features are then assembled, not computed.
    Samples are known by a digest of their bytes; outside such a block this does nothing."""

    def __init__(self, key: Any, train_x: np.ndarray, test_x: np.ndarray) -> None:
        memory = shared_memory()
        self.rows: dict[bytes, np.ndarray] | None = None if memory is None else memory.setdefault(key, {})
        if self.rows is not None:
            self.train, self.test = _row_digests(train_x), _row_digests(test_x)

    def arrays(self) -> dict[str, np.ndarray] | None:
        rows = self.rows
        if rows is None or not all(k in rows for k in (*self.train, *self.test)):
            return None
        return {"train": np.stack([rows[k] for k in self.train]), "test": np.stack([rows[k] for k in self.test])}

    def keep(self, arrays: dict[str, np.ndarray]) -> None:
        if self.rows is not None:
            for split, keys in (("train", self.train), ("test", self.test)):
                self.rows.update(zip(keys, arrays[split]))


def _row_digests(x: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest() for row in x]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def encode_array(extractor: Extractor, x: np.ndarray, batch_size: int, ticker: Ticker | None = None) -> np.ndarray:
    """Features [N, D] float32 of samples `x` [N, ...], in batches, on the extractor's device."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[i: i + batch_size])).to(extractor.device)
            out.append(extractor.encode(batch).float().cpu().numpy())  # (B, D)
            if ticker is not None:
                ticker.add(len(batch))
    features = np.concatenate(out).astype(np.float32)
    if features.ndim != 2:
        features = features.reshape(len(features), -1)
    return features


def build_experiment_stream(cfg: ExperimentConfig, progress: Callable[[str], None] = print, encode: bool = True) -> Stream:
    """The experiment's stream: its sources loaded, with pretrained features in place of the modalities
    that `cfg.pretrained` names (the one place where the config's encoders meet the data layer). With
    `encode=False` (validate), features not in the cache are zeros of the right width, after a dry run of
    the encoder on a few samples, and nothing is cached."""
    from lifelong_moe.offline import hf_offline
    from scenarios import build_stream

    hf_offline()
    fraction = cfg.train.validation_fraction
    with reporting(progress):  # decoding and encoding say how far they are
        if not cfg.pretrained:
            return build_stream(cfg.stream, cfg.seed, validation_fraction=fraction)
        transform = FeatureTransform(cfg.pretrained, progress, encode)
        stream = build_stream(cfg.stream, cfg.seed, transform, validation_fraction=fraction)
    transform.check_used()
    return stream
