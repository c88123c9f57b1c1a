"""Several sources joined into one multimodal source, by sample id or by label.

    by: id     samples with the same id in every source form one sample (file stems for folder sources,
               `id_column` for csv and hf_dataset): images/cat/001.png + audio/cat/001.wav. The join
               comes before the train/test split, so a pair is never split across it; the sources'
               own train/test folders are kept when they agree, else `test_fraction` applies.
    by: label  as AV-MNIST pairs digit images with spoken digits: each sample of the first source gets a
               sample of the same class from every other source, drawn without replacement while it
               lasts (then again, in a new order), seeded; train with train and test with test, so no
               sample of one source is seen in both splits. Any registered source kind can take part.

Modality names must differ between the sources (`modality:` names them in the folder sources)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scenarios.config import SourceConfig
from scenarios.errors import ConfigError, DataError
from scenarios.registry import resolve_params
from scenarios.sources.base import SOURCES, SourceData, Split, load_source
from scenarios.sources.files import POOLS, Pool, split_pool


@dataclass
class PairedParams:
    sources: dict[str, SourceConfig] = field(default_factory=dict)  # name -> {kind, params}; the first leads
    by: str = "id"  # id | label
    missing: str = "error"  # by id: an id absent from some source is an error, or `drop` it
    test_fraction: float = 0.2  # by id, when no source carries a train/test split


def _resolved(params: PairedParams) -> list[tuple[str, str, object]]:
    if len(params.sources) < 2:
        raise DataError("sources: name at least two sources to pair")
    out = []
    for name, src in params.sources.items():
        try:
            SOURCES.get(src.kind, f"sources.{name}.kind")
            out.append((name, src.kind, resolve_params(SOURCES, src.kind, src.params, f"sources.{name}.params")))
        except ConfigError as err:
            raise DataError(str(err)) from None
    return out


def _check_names(modalities: list[tuple[str, list[str]]]) -> None:
    seen: dict[str, str] = {}
    for source, names in modalities:
        for m in names:
            if m in seen:
                raise DataError(f"sources.{source}: modality '{m}' is also produced by '{seen[m]}'; rename one (e.g. its `modality` param)")
            seen[m] = source


def _by_id(params: PairedParams, subs: list[tuple[str, str, object]], seed: int) -> SourceData:
    pools: list[tuple[str, Pool]] = []
    for name, kind, sub_params in subs:
        if kind not in POOLS:
            raise DataError(f"sources.{name}.kind: pairing by id needs a source with ids ({', '.join(sorted(POOLS))}); use by: label")
        try:
            pools.append((name, POOLS[kind](sub_params, seed)))
        except DataError as err:
            raise DataError(f"sources.{name}.params.{err}") from None
    _check_names([(n, list(p.modalities)) for n, p in pools])
    if params.missing not in ("error", "drop"):
        raise DataError(f"missing: must be error or drop, got '{params.missing}'")
    index: list[dict[str, int]] = []
    for name, pool in pools:
        pos: dict[str, int] = {}
        for i, sid in enumerate(pool.ids.tolist()):
            if sid in pos:
                raise DataError(f"sources.{name}: id '{sid}' occurs twice ({pool.where}); ids must be unique to pair by id")
            pos[sid] = i
        index.append(pos)
    lead_name, lead = pools[0]
    keep = []
    for sid in lead.ids.tolist():
        absent = [pools[k][0] for k in range(1, len(pools)) if sid not in index[k]]
        if absent and params.missing == "error":
            raise DataError(f"sources.{absent[0]}: no sample with id '{sid}' of '{lead_name}' (set missing: drop to skip such ids)")
        if not absent:
            keep.append(sid)
    if params.missing == "error":
        for k in range(1, len(pools)):
            extra = sorted(set(index[k]) - set(index[0]))
            if extra:
                raise DataError(f"sources.{lead_name}: no sample with id '{extra[0]}' of '{pools[k][0]}' (set missing: drop to skip such ids)")
    if not keep:
        raise DataError(f"sources: no id occurs in every source (e.g. '{lead.ids[0]}' of '{lead_name}')")
    rows = [np.array([index[k][sid] for sid in keep]) for k in range(len(pools))]
    for k in range(1, len(pools)):
        name, pool = pools[k]
        for sid, a, b in zip(keep, rows[0], rows[k]):
            ca, cb = lead.class_names.get(int(lead.labels[a])), pool.class_names.get(int(pool.labels[b]))
            if ca != cb:
                raise DataError(f"sources.{name}: id '{sid}' is class '{cb}' there but '{ca}' in '{lead_name}'")
    split = None
    for k, (name, pool) in enumerate(pools):
        if pool.split is None:
            continue
        mine = pool.split[rows[k]]
        if split is None:
            split = mine
        elif not np.array_equal(split, mine):
            sid = keep[int(np.flatnonzero(split != mine)[0])]
            raise DataError(f"sources.{name}: id '{sid}' lies in another train/test split than in the other sources")
    merged = Pool({}, lead.labels[rows[0]], np.array(keep), split, {}, dict(lead.class_names), lead.where)
    for (_name, pool), row in zip(pools, rows):
        merged.inputs.update({m: a[row] for m, a in pool.inputs.items()})
        merged.modalities.update(pool.modalities)
        merged.tokenizers.update(pool.tokenizers)
        merged.standardize += pool.standardize
        merged.scale.update(pool.scale)
    return split_pool(merged, params.test_fraction, seed)


def _by_label(subs: list[tuple[str, str, object]], seed: int) -> SourceData:
    loaded = []
    for name, kind, sub_params in subs:
        try:
            loaded.append((name, load_source(kind, sub_params, seed)))
        except DataError as err:
            raise DataError(f"sources.{name}.params.{err}") from None
    _check_names([(n, list(d.modalities)) for n, d in loaded])
    lead_name, lead = loaded[0]
    for name, data in loaded[1:]:
        _check_same_classes(lead_name, lead, name, data)
    splits = []
    for s, role in enumerate(("train", "test")):
        anchor: Split = getattr(lead, role)
        inputs = dict(anchor.inputs)
        for k, (name, data) in enumerate(loaded[1:], start=1):
            other: Split = getattr(data, role)
            pick = np.empty(len(anchor), dtype=np.int64)
            for c in np.unique(anchor.labels):
                mine, theirs = np.flatnonzero(anchor.labels == c), np.flatnonzero(other.labels == c)
                if len(theirs) == 0:
                    raise DataError(f"sources.{name}: no sample of class {lead.class_names.get(int(c), int(c))!r} in its {role} split, "
                                    f"which '{lead_name}' has")
                rng = np.random.default_rng([seed, k, int(c), s])
                order = np.concatenate([rng.permutation(theirs) for _ in range(-(-len(mine) // len(theirs)))])
                pick[mine] = order[: len(mine)]
            inputs.update({m: a[pick] for m, a in other.inputs.items()})
        splits.append(Split(inputs, anchor.labels))
    modalities = {m: spec for _, d in loaded for m, spec in d.modalities.items()}
    preparation = {m: prep for _, d in loaded for m, prep in d.preparation.items()}
    return SourceData(splits[0], splits[1], modalities, class_names=dict(lead.class_names), preparation=preparation)


def _check_same_classes(lead_name: str, lead: SourceData, name: str, other: SourceData) -> None:
    """Pairing by label joins class k of one source with class k of the other, so where both sources name
    their classes (folders, label columns) the names of each shared label must agree: folders 0..9 beside
    folders zero..nine would otherwise pair the images of 0 with the clips of `eight` (class 0 of the
    sorted names)."""
    if not lead.class_names or not other.class_names:
        return
    for label in sorted(set(lead.class_names) & set(other.class_names)):
        mine, theirs = lead.class_names[label], other.class_names[label]
        if mine != theirs:
            raise DataError(f"sources.{name}: class {label} is '{theirs}' there but '{mine}' in '{lead_name}'; pairing by "
                            f"label joins classes by number, so name the classes alike in both sources")


@SOURCES.register("paired", params=PairedParams)
def paired_source(params: PairedParams, seed: int) -> SourceData:
    """Several sources as one multimodal source, paired by sample id (file stem, id column) or by label."""
    subs = _resolved(params)
    if params.by == "id":
        return _by_id(params, subs, seed)
    if params.by == "label":
        return _by_label(subs, seed)
    raise DataError(f"by: must be id or label, got '{params.by}'")
