"""Another source with its test split set aside and part of its training split in its place, so that a
whole lifelong run (every strategy's learning rate and epochs, say) can be chosen on validation data
without a look at the test data:

    sources:
      digits: {kind: holdout, params: {source: {kind: cluttered_digits}, fraction: 0.2}}

The held-out part is stratified by class and drawn from the run's seed (plus one, so it differs from
the split that validation-based choices inside a run carve out)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scenarios.config import SourceConfig
from scenarios.errors import ConfigError, DataError
from scenarios.registry import resolve_params
from scenarios.sources.base import SOURCES, SourceData, load_source, stratified_split


@dataclass
class HoldoutParams:
    source: SourceConfig = field(default_factory=SourceConfig)  # the source whose training split is divided: {kind, params}
    fraction: float = 0.2  # share of each class's training samples held out as the test split


@SOURCES.register("holdout", params=HoldoutParams)
def holdout(params: HoldoutParams, seed: int) -> SourceData:
    """A source's training split divided into train and held-out validation (used as test); its test split unused."""
    if not 0.0 < params.fraction < 1.0:
        raise ValueError(f"fraction: must lie in (0, 1), got {params.fraction}")
    try:
        inner = resolve_params(SOURCES, params.source.kind, params.source.params, "source.params")
        data = load_source(params.source.kind, inner, seed, "source")
    except ConfigError as err:
        raise DataError(str(err)) from None
    train, held = stratified_split(data.train.labels, params.fraction, seed + 1)
    missing = sorted(set(data.train.labels.tolist()) - set(data.train.labels[train].tolist()))
    if missing:  # a class the held-out part lacks is only untested, as in any test split; one never trained is refused
        c = missing[0]
        raise DataError(f"fraction: {params.fraction} leaves class {data.class_names.get(c, c)!r} with no training sample "
                        f"(it has {int((data.train.labels == c).sum())})")
    return SourceData(data.train.subset(train), data.train.subset(held), data.modalities, files=list(data.files),
                      class_names=dict(data.class_names), preparation=dict(data.preparation))
