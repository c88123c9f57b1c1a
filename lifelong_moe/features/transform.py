"""Turn a config's `pretrained` section into the per-source transform of `build_stream`: each modality
with a pretrained encoder is replaced, in train and test, by the encoder's features [N, D] (a `tabular`
modality), read from the feature cache when the same data went through the same encoder before.

Before the cache is looked at, each encoder is checked offline by its kind's `check` (name, params,
weights: a file, or a folder without code) and its device must exist here.

Cache key: SHA-256 of the modality's train and test arrays (its decoded data and preprocessing), the
encoder's kind, name and params, the SHA-256 of its weights file (or of an hf folder's own files), the
device it runs on (cpu, or the GPU's model: a GPU may round differently), and the torch / timm /
torchvision / transformers versions. A changed data file changes the decoded arrays, a changed weights
file its hash: either one misses the cache. An encoder is built and run with every random-number state
saved and restored, so a cold cache leaves the run's own draws as a warm one does."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lifelong_moe.errors import ConfigError, DataError
from lifelong_moe.features.base import EXTRACTORS, Extractor, check_modality, checked_device, device_key, versions
from lifelong_moe.registry import resolve_params
from scenarios.cache import ArrayCache, array_digest, digest_files
from scenarios.modality import ModalitySpec
from scenarios.sources.base import SourceData, Split

if TYPE_CHECKING:
    from lifelong_moe.config.schema import EncoderConfig, ExperimentConfig
    from scenarios.builder import Stream

FEATURE_FORMAT = 1  # bump when feature extraction changes, so older cache entries are not read


class FeatureTransform:
    """`transform(source_name, data) -> data` with pretrained features in place of raw modalities.
    Extractors load lazily (only on a cache miss) and once per modality; `records` keeps what was done."""

    def __init__(self, pretrained: dict[str, EncoderConfig], progress: Callable[[str], None] = print) -> None:
        self.pretrained = pretrained
        self.progress = progress
        self.used: set[str] = set()
        self.records: list[dict[str, Any]] = []
        self.fingerprints: dict[str, dict[str, Any]] = {}  # per modality: its weights, for a resume to compare
        self._extractors: dict[str, Extractor] = {}

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
        return SourceData(Split(inputs_train, data.train.labels), Split(inputs_test, data.test.labels), modalities,
                          list(data.classes), files)

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
        start = time.perf_counter()
        train_x, test_x = data.train.inputs[modality], data.test.inputs[modality]
        digest = _weights_digest(weights, files)
        self.fingerprints[modality] = {"param": f"{key}.weights", "path": str(weights), "mtime_ns": 0, "sha256": digest,
                                       "size": sum(f.stat().st_size for f in files)}
        cache_key = {
            "format": FEATURE_FORMAT,
            "modality": spec.to_dict(),
            "data": array_digest({"train": train_x, "test": test_x}),
            "encoder": {"kind": enc.kind, "name": enc.name, "params": asdict(params) if is_dataclass(params) else params,
                        "weights": digest, "device": device_key(device),
                        "versions": versions(EXTRACTORS.meta(enc.kind).get("packages", ()))},
        }
        cache = ArrayCache("features", enc.cache)
        arrays = cache.load(cache_key, prefix=f"{enc.kind}-{modality}-")
        hit = arrays is not None
        if arrays is None:
            from lifelong_moe.checkpointing import preserved_rng

            with preserved_rng():  # building a model draws its random init: a cold cache must not shift the run's draws
                extractor = self._extractor(modality, enc, params, spec, key)
                arrays = {"train": _encode(extractor, train_x, enc.batch_size), "test": _encode(extractor, test_x, enc.batch_size)}
            cache.store(cache_key, arrays, prefix=f"{enc.kind}-{modality}-")
        seconds = time.perf_counter() - start
        for split in ("train", "test"):  # NaN weights, or an encoder that overflows, give silently wrong features
            bad = np.flatnonzero(~np.isfinite(arrays[split]).all(axis=1))
            if len(bad):
                raise DataError(f"{key}: the {enc.kind} encoder gave NaN or infinite features for {split} sample {int(bad[0])} "
                                f"of source '{source}' (weights {enc.weights})")
        dim = int(arrays["train"].shape[1])
        self.records.append({"source": source, "modality": modality, "kind": enc.kind, "name": enc.name, "dim": dim,
                             "n_train": len(train_x), "n_test": len(test_x), "cached": hit, "seconds": seconds})
        how = "read from the cache" if hit else ("computed and cached" if enc.cache else "computed (cache off)")
        self.progress(f"[lifelong-moe] pretrained {modality} ({enc.kind} {enc.name or weights.name}) on source '{source}': "
                      f"{len(train_x)} train + {len(test_x)} test samples -> {dim}-d features, {how} in {seconds:.2f}s")
        return arrays["train"], arrays["test"]

    def _extractor(self, modality: str, enc: EncoderConfig, params: Any, spec: ModalitySpec, key: str) -> Extractor:
        if modality not in self._extractors:
            self._extractors[modality] = EXTRACTORS.get(enc.kind, f"{key}.kind")(enc, params, spec, key)
        return self._extractors[modality]


def _encode(extractor: Extractor, x: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[i: i + batch_size])).to(extractor.device)
            out.append(extractor.encode(batch).float().cpu().numpy())  # (B, D)
    features = np.concatenate(out).astype(np.float32)
    if features.ndim != 2:
        features = features.reshape(len(features), -1)
    return features


def _weights_digest(weights: Path, files: list[Path]) -> str:
    """SHA-256 over the weights' files (a file, or an hf folder's own files)."""
    return digest_files(files, weights if weights.is_dir() else None)


def build_experiment_stream(cfg: ExperimentConfig, progress: Callable[[str], None] = print) -> Stream:
    """The experiment's stream: its sources loaded, with pretrained features in place of the modalities
    that `cfg.pretrained` names (the one place where the config's encoders meet the data layer)."""
    from lifelong_moe.offline import hf_offline
    from scenarios import build_stream

    hf_offline()
    fraction = cfg.train.validation_fraction
    if not cfg.pretrained:
        return build_stream(cfg.stream, cfg.seed, validation_fraction=fraction)
    transform = FeatureTransform(cfg.pretrained, progress)
    stream = build_stream(cfg.stream, cfg.seed, transform, validation_fraction=fraction)
    transform.check_used()
    return stream
