"""A synthetic K-modality source with controllable difficulty, modality imbalance, noise and domain shift."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData, Split, check_budget, check_counts


@dataclass
class SyntheticParams:
    n_classes: int = 10  # Gaussian classes
    n_modalities: int = 2  # modalities m0 .. m{K-1}, each a feature vector
    dim: int = 16  # features per modality
    n_train_per_class: int = 100  # training samples per class
    n_test_per_class: int = 50  # test samples per class
    separation: float = 2.0  # distance scale between class means: lower is harder
    imbalance: float = 0.0  # modality m's separation is scaled by (1 - imbalance) ** m
    noise: float = 1.0  # per-sample Gaussian noise
    domain: int = 0  # 0: identity; k > 0: a fixed random rotation and shift, for domain-incremental streams


@SOURCES.register("synthetic", params=SyntheticParams, generated=True)
def synthetic_source(params: SyntheticParams, seed: int) -> SourceData:
    """Gaussian classes in K tabular modalities `m0`..`m{K-1}`."""
    if not 0.0 <= params.imbalance < 1.0:
        raise ValueError("imbalance must lie in [0, 1)")
    check_counts(n_classes=params.n_classes, n_modalities=params.n_modalities, dim=params.dim,
                 n_train_per_class=params.n_train_per_class, n_test_per_class=params.n_test_per_class)
    if params.n_modalities > 1000 or params.dim > 100_000 or params.domain < 0:
        raise ValueError(f"n_modalities (at most 1000), dim (at most 100000) or domain (>= 0) out of range: "
                         f"{params.n_modalities}, {params.dim}, {params.domain}")
    check_budget(params.n_classes * max(params.n_train_per_class, params.n_test_per_class) * params.n_modalities * params.dim,
                 "n_classes x n_*_per_class x n_modalities x dim")
    for name in ("separation", "noise"):
        if not np.isfinite(getattr(params, name)):
            raise ValueError(f"{name}: must be a finite number, got {getattr(params, name)}")
    structure = np.random.default_rng(seed)  # class means: shared by every domain
    sample_rng = np.random.default_rng([seed, params.domain, 1])
    domain_rng = np.random.default_rng([params.domain, 2])
    y = np.repeat(np.arange(params.n_classes), params.n_train_per_class)
    yt = np.repeat(np.arange(params.n_classes), params.n_test_per_class)
    train, test, specs = {}, {}, {}
    for m in range(params.n_modalities):
        scale = params.separation * (1.0 - params.imbalance) ** m
        means = structure.normal(0, 1, (params.n_classes, params.dim)) * scale / np.sqrt(2)
        if params.domain:
            rotation, _ = np.linalg.qr(domain_rng.normal(size=(params.dim, params.dim)))
            shift = domain_rng.normal(0, 1, params.dim)
        else:
            rotation, shift = np.eye(params.dim), np.zeros(params.dim)
        draw = lambda labels: ((means[labels] + sample_rng.normal(0, params.noise, (len(labels), params.dim))) @ rotation + shift)  # noqa: E731
        name = f"m{m}"
        train[name], test[name] = draw(y).astype(np.float32), draw(yt).astype(np.float32)
        specs[name] = ModalitySpec("tabular", (params.dim,))
    return SourceData(Split(train, y), Split(test, yt), specs)
