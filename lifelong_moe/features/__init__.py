"""Frozen pretrained encoders (timm, torchvision, Hugging Face) read from local weights, whose features
replace a modality's raw arrays before the stream is built, cached on disk.

    pretrained:
      image: {kind: timm, name: vit_base_patch16_224, weights: data/weights/vit_b16.safetensors}

Nothing here is trained: the encoders run once per (data, preprocessing, encoder, weights) and later runs
read the features from the cache. `lifelong_moe.features.base` holds the registry and is light to import;
torch, timm and transformers load only when a feature has to be computed."""

from typing import Any

from lifelong_moe.features.base import EXTRACTORS, Extractor, check_pretrained


def __getattr__(name: str) -> Any:
    # the transform needs the data layer (and Avalanche through it); the config loader only needs `base`
    if name in ("FeatureTransform", "build_experiment_stream"):
        from lifelong_moe.features import transform

        return getattr(transform, name)
    raise AttributeError(f"module 'lifelong_moe.features' has no attribute {name!r}")


__all__ = ["EXTRACTORS", "Extractor", "FeatureTransform", "build_experiment_stream", "check_pretrained"]
