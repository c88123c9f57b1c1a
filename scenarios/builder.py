"""Turn a stream config into an Avalanche benchmark whose experiences know their classes, modalities
and task labels. Knows data and streams, never models."""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils.classification_dataset import TaskAwareClassificationDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute

from scenarios.config import ExperienceConfig, ScenarioKind, StreamConfig
from scenarios.dataset import MultimodalDataset
from scenarios.errors import ConfigError
from scenarios.masking import keep_one
from scenarios.modality import MASK_KEY, ModalitySpec
from scenarios.registry import resolve_params
from scenarios.sources import SOURCES, SourceData, Split, load_source

MAX_TASKS = 10_000


@dataclass
class ExperienceSpec:
    """What one experience holds, as resolved from config."""

    index: int
    name: str
    source: str
    classes: list[int]
    modalities: list[str]
    task_label: int
    n_train: int
    n_test: int
    test_missing_rate: dict[str, float] = field(default_factory=dict)
    n_val: int = 0  # training samples set aside as this experience's validation split


@dataclass(frozen=True)
class Experience:
    """One experience as models and strategies receive it: what it holds (`spec`), its samples (an
    Avalanche classification dataset of `(inputs, label, task)`), and the shape of each modality it
    carries. `avalanche` is the same experience in the Avalanche benchmark, for Avalanche's strategies."""

    spec: ExperienceSpec
    dataset: Any
    modality_specs: dict[str, ModalitySpec]
    avalanche: Any = field(default=None, repr=False, compare=False)
    validation: Any = field(default=None, repr=False, compare=False)  # held-out training samples, or None

    @property
    def index(self) -> int:
        return self.spec.index

    @property
    def classes(self) -> list[int]:
        """The classes this experience's samples belong to, sorted."""
        return self.spec.classes

    @property
    def modalities(self) -> list[str]:
        return self.spec.modalities

    @property
    def task_label(self) -> int:
        return self.spec.task_label


@dataclass
class Stream:
    """A built stream: the Avalanche benchmark, the resolved description of every experience, and the
    typed train and test experiences the runner hands to models, strategies and the evaluator."""

    benchmark: Any
    experiences: list[ExperienceSpec]
    modalities: dict[str, ModalitySpec]
    n_classes: int
    scenario: ScenarioKind
    train_stream: list[Experience] = field(default_factory=list)
    test_stream: list[Experience] = field(default_factory=list)
    data_files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # source -> fingerprints of its files
    class_names: dict[int, str] = field(default_factory=dict)  # label -> name, where the sources name classes
    preparation: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> how its samples were made

    def __post_init__(self) -> None:
        if not self.train_stream:
            self.train_stream = self._typed(self.benchmark.train_stream)
            self.test_stream = self._typed(self.benchmark.test_stream)

    def _typed(self, avalanche_stream: Any) -> list[Experience]:
        return [Experience(spec, exp.dataset, {m: self.modalities[m] for m in spec.modalities}, exp)
                for spec, exp in zip(self.experiences, avalanche_stream, strict=True)]

    def class_name(self, label: int) -> str:
        """The class's name where its source gives one, else its label as text."""
        return self.class_names.get(int(label), str(label))

    def names_of_classes(self) -> list[str]:
        """Every label's name, indexed by label (0 .. n_classes-1)."""
        return [self.class_name(c) for c in range(self.n_classes)]

    def describe(self) -> str:
        """A table of the experiences (classes by name where they have one), for `lifelong-moe validate`."""
        rows = [f"{'#':>3} {'name':<14} {'source':<18} {'task':>4} {'train':>6} {'test':>6}  classes / modalities"]
        for e in self.experiences:
            classes = f"[{', '.join(self.class_name(c) for c in e.classes)}]"
            rows.append(
                f"{e.index:>3} {e.name:<14} {e.source:<18} {e.task_label:>4} {e.n_train:>6} {e.n_test:>6}  "
                f"{classes} / {'+'.join(e.modalities)}"
            )
        return "\n".join(rows)

    def describe_classes(self) -> str | None:
        """The label -> name mapping, one `label name` pair per class of the stream; None when no class is named."""
        used = sorted({c for e in self.experiences for c in e.classes})
        if all(self.class_name(c) == str(c) for c in used):
            return None
        return "classes (label: name): " + ", ".join(f"{c}: {self.class_name(c)}" for c in used)


SourceTransform = Callable[[str, SourceData], SourceData]
"""Applied to each loaded source before its experiences are cut, e.g. frozen pretrained features
replacing raw images (`lifelong_moe.features`); must return a new SourceData, not change its argument."""


def build_stream(cfg: StreamConfig, seed: int = 0, transform: SourceTransform | None = None,
                 validation_fraction: float = 0.0) -> Stream:
    """Load the sources (each through `transform`, if given), resolve and check every experience, and
    build the Avalanche benchmark. `validation_fraction` of each experience's training samples (stratified
    by class, seeded) are set aside as its validation split, for choosing hyperparameters without
    touching the test data."""
    sources = _load_sources(cfg, seed, transform)
    exps = _expand_experiences(cfg, sources)
    if not exps:
        raise ConfigError("stream.experiences: the stream has no experiences")
    _check_names(exps)
    specs = _stream_modalities(exps, sources)
    _check_scenario(cfg.scenario, exps)

    train_sets, test_sets, val_sets, resolved = [], [], [], []
    for i, (key, exp) in enumerate(exps):
        src = sources[exp.source]
        rng = np.random.default_rng([seed, i, 11])
        task = (exp.task_label if exp.task_label is not None else i) if cfg.scenario == ScenarioKind.task_incremental else 0
        modalities = exp.modalities or sorted(src.modalities)
        classes = exp.classes or list(src.classes)
        train = _select(src.train, classes, exp.train_size, rng, f"{key}.train_size", every_class=True)
        test = _select(src.test, classes, exp.test_size, rng, f"{key}.test_size")
        for split, name in ((train, "train"), (test, "test")):
            if len(split) == 0:
                raise ConfigError(f"{key}: the {name} split is empty (source '{exp.source}', classes {_shown(classes, src)})")
        val_rng = np.random.default_rng([seed, i, 13])
        train, val = _carve_validation(train, validation_fraction, val_rng)
        train_sets.append(_dataset(train, modalities, exp.train_missing_rate, specs, task, rng, f"{key}.train_missing_rate"))
        test_sets.append(_dataset(test, modalities, exp.test_missing_rate, specs, task, rng, f"{key}.test_missing_rate"))
        val_sets.append(_dataset(val, modalities, exp.train_missing_rate, specs, task, val_rng, f"{key}.train_missing_rate")
                        if len(val) else None)
        resolved.append(
            ExperienceSpec(i, exp.name or f"exp{i}", exp.source, sorted(classes), list(modalities), task,
                           len(train), len(test), dict(exp.test_missing_rate), n_val=len(val))
        )

    benchmark = with_task_labels(with_classes_timeline(benchmark_from_datasets(train=train_sets, test=test_sets)))
    n_classes = 1 + max(c for e in resolved for c in e.classes)
    stream = Stream(benchmark, resolved, specs, n_classes, cfg.scenario,
                    data_files={name: src.files for name, src in sources.items() if src.files},
                    class_names=_class_names(resolved, sources),
                    preparation={m: p for src in sources.values() for m, p in src.preparation.items() if m in specs})
    stream.train_stream = [replace(e, validation=v) for e, v in zip(stream.train_stream, val_sets, strict=True)]
    return stream


def _class_names(experiences: list[ExperienceSpec], sources: dict[str, SourceData]) -> dict[int, str]:
    """label -> name over the stream's experiences; a label that two sources name differently gets both names."""
    names: dict[int, list[str]] = {}
    for e in experiences:
        for c in e.classes:
            name = sources[e.source].class_names.get(c)
            if name is not None and name not in names.setdefault(c, []):
                names[c].append(name)
    return {c: "/".join(n) for c, n in sorted(names.items()) if n}


def _labels(values: list[Any], src: SourceData, source: str, key: str, who: str = "") -> list[int]:
    """Class labels from a config list of labels and names (`[barbera, nebbiolo]`, `[0, 1]`, or mixed)."""
    by_name = {unicodedata.normalize("NFC", name): label for label, name in src.class_names.items()}
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ConfigError(f"{key}: expected class labels or names, got {v!r}")
        if isinstance(v, str):  # a name typed in another Unicode form ('café' decomposed) is the same name
            v = unicodedata.normalize("NFC", v)
        if isinstance(v, int):
            if by_name.get(str(v), v) != v:  # a class is named with this number, and it is not label v
                raise ConfigError(f"{key}: {v} is ambiguous in source '{source}': label {v} is class "
                                  f"'{src.class_names.get(v, v)}', but a class is named '{v}' (label {by_name[str(v)]}); "
                                  f"write class names, quoted ('{v}')")
            out.append(v)
        elif v in by_name:
            out.append(by_name[v])
        elif v.strip().isdigit():  # a label written as text, e.g. "3"
            out.append(int(v))
        elif not by_name:
            raise ConfigError(f"{key}: source '{source}' has no class names, so '{v}'{who} names no class; give "
                              f"labels (its classes: {', '.join(map(str, src.classes))})")
        else:
            close = difflib.get_close_matches(v, list(by_name), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            shown = sorted(by_name, key=lambda n: by_name[n])
            raise ConfigError(f"{key}: source '{source}' has no class named '{v}'{who}{hint}; its classes: "
                              f"{', '.join(shown[:50])}{' ...' if len(shown) > 50 else ''}")
    return out


def _carve_validation(split: Split, fraction: float, rng: np.random.Generator) -> tuple[Split, Split]:
    """(train, validation): `fraction` of each class's samples (rounded, at most all but one) to validation."""
    if fraction <= 0:
        return split, split.subset(np.zeros(0, dtype=int))
    val = []
    for c in np.unique(split.labels):
        members = rng.permutation(np.flatnonzero(split.labels == c))
        val.append(members[: min(int(round(fraction * len(members))), len(members) - 1)])
    val_idx = np.sort(np.concatenate(val))
    keep = np.setdiff1d(np.arange(len(split)), val_idx)
    return split.subset(keep), split.subset(val_idx)


def _load_sources(cfg: StreamConfig, seed: int, transform: SourceTransform | None = None) -> dict[str, SourceData]:
    if not cfg.sources:
        raise ConfigError("stream.sources: no data sources defined")
    loaded = {}
    for name, src in cfg.sources.items():
        key = f"stream.sources.{name}"
        if not _usable_name(name):  # a dotted name could not be reached by a key=value override
            raise ConfigError(f"stream.sources: {name!r} cannot name a source (a name must not be empty or hold a '.')")
        params = resolve_params(SOURCES, src.kind, src.params, f"{key}.params") if src.kind in SOURCES else None
        SOURCES.get(src.kind, f"{key}.kind")
        data = load_source(src.kind, params, seed, key)  # its errors name `key.params...`
        for modality in data.modalities:
            if modality == MASK_KEY:
                raise ConfigError(f"{key}: '{MASK_KEY}' is reserved and cannot name a modality")
            if not _usable_name(modality):
                raise ConfigError(f"{key}: {modality!r} cannot name a modality (a name must not be empty or hold a '.'); "
                                  f"rename it where the source takes it (a CSV column, `modality`, `tabular_name`)")
        if transform is not None:
            out = transform(name, data)
            data = out if out.files else replace(out, files=data.files)  # a transform may add fingerprints, not drop them
        loaded[name] = data
    return loaded


def _expand_experiences(cfg: StreamConfig, sources: dict[str, SourceData]) -> list[tuple[str, ExperienceConfig]]:
    """(config key, experience) pairs, from the explicit list or the split rule; checked against sources."""
    if cfg.experiences and cfg.split is not None:
        raise ConfigError("stream: give either `experiences` or `split`, not both")
    if cfg.split is not None:
        rule = cfg.split
        src = _source(sources, rule.source, "stream.split.source")
        order = _labels(list(rule.class_order), src, rule.source, "stream.split.class_order") or list(src.classes)
        seen: set[int] = set()
        twice = next((c for c in order if c in seen or seen.add(c)), None) if rule.class_order else None
        if twice is not None:
            raise ConfigError(f"stream.split.class_order: class {_shown([twice], src)[0]!r} appears twice; list each class once")
        if rule.shuffle_classes and not rule.class_order:
            order = list(np.random.default_rng(0).permutation(order))
        if not 1 <= rule.n_experiences <= len(order):
            raise ConfigError(f"stream.split.n_experiences: must lie in 1..{len(order)} (classes available), got {rule.n_experiences}")
        groups = np.array_split(np.asarray(order, dtype=int), rule.n_experiences)
        exps = [
            ExperienceConfig(source=rule.source, classes=[int(c) for c in g], modalities=list(rule.modalities),
                             train_size=rule.train_size, test_size=rule.test_size,
                             test_missing_rate=dict(rule.test_missing_rate))
            for g in groups
        ]
        keys = ["stream.split"] * len(exps)
    else:
        exps = list(cfg.experiences)
        keys = [f"stream.experiences[{i}]" for i in range(len(exps))]
    for i, (key, exp) in enumerate(zip(keys, exps)):
        src = _source(sources, exp.source, f"{key}.source")
        who = f" (asked for by experience '{exp.name}')" if exp.name else ""
        if cfg.split is None:  # the split's experiences hold labels already (from class_order or the source)
            exp = exps[i] = replace(exp, classes=_labels(list(exp.classes), src, exp.source, f"{key}.classes", who))
        missing_classes = sorted(set(exp.classes) - set(src.classes))
        if missing_classes:
            raise ConfigError(f"{key}.classes: source '{exp.source}' has no class {missing_classes} (has {src.classes})")
        if len(set(exp.classes)) != len(exp.classes):
            raise ConfigError(f"{key}.classes: repeated class in {list(exp.classes)}")
        unknown = sorted(set(exp.modalities) - set(src.modalities))
        if unknown:
            raise ConfigError(f"{key}.modalities: source '{exp.source}' has no modality {unknown} (has {sorted(src.modalities)})")
        for field_name in ("train_size", "test_size"):
            size = getattr(exp, field_name)
            if size is not None and size <= 0:
                raise ConfigError(f"{key}.{field_name}: must be positive, got {size}")
    return list(zip(keys, exps))


def _usable_name(name: str) -> bool:
    """A source or modality name: not empty, and no '.', which splits config keys and state-dict names."""
    return bool(name.strip()) and "." not in name


def _shown(classes: list[int], src: SourceData) -> list[int | str]:
    """Classes as the user knows them: their names where the source gives names, else their labels."""
    return [src.class_names.get(c, c) for c in classes] if src.class_names else list(classes)


def _check_names(exps: list[tuple[str, ExperienceConfig]]) -> None:
    """Experience names head tables, CSV columns, plots and TensorBoard tags: each names one experience (a
    default `exp<i>` included) and holds no control character."""
    seen: dict[str, str] = {}
    for i, (key, exp) in enumerate(exps):
        name = exp.name or f"exp{i}"
        where = f"{key}.name" if key != "stream.split" else "stream.split"
        if any(unicodedata.category(ch) == "Cc" for ch in name):
            raise ConfigError(f"{where}: {name!r} holds a control character (a line break or tab); experience names head tables and plots")
        if name in seen:
            raise ConfigError(f"{where}: '{name}' also names {seen[name]}; give each experience its own name")
        seen[name] = f"experience {i}" if key == "stream.split" else key


def _source(sources: dict[str, SourceData], name: str, key: str) -> SourceData:
    if name not in sources:
        raise ConfigError(f"{key}: unknown source '{name}'; defined in stream.sources: {', '.join(sorted(sources))}")
    return sources[name]


def _stream_modalities(exps: list[tuple[str, ExperienceConfig]], sources: dict[str, SourceData]) -> dict[str, ModalitySpec]:
    """The union of modalities over the stream; one name must mean one shape and kind everywhere."""
    specs: dict[str, ModalitySpec] = {}
    for key, exp in exps:
        src = sources[exp.source]
        for m in exp.modalities or sorted(src.modalities):
            spec = src.modalities[m]
            if m in specs and specs[m] != spec:
                raise ConfigError(f"{key}.modalities: modality '{m}' of source '{exp.source}' is {spec}, elsewhere {specs[m]}")
            specs[m] = spec
    return specs


def _check_scenario(kind: ScenarioKind, exps: list[tuple[str, ExperienceConfig]]) -> None:
    for key, exp in exps:  # models keep one row of class masks per task label, up to the largest
        if exp.task_label is not None and not 0 <= exp.task_label < MAX_TASKS:
            raise ConfigError(f"{key}.task_label: must lie in 0..{MAX_TASKS - 1}, got {exp.task_label}")
    if kind != ScenarioKind.task_incremental:
        for key, exp in exps:
            if exp.task_label is not None:
                raise ConfigError(f"{key}.task_label: {kind.value} streams carry no task labels")
    if kind == ScenarioKind.domain_incremental:
        first = sorted(exps[0][1].classes)
        for key, exp in exps[1:]:
            if sorted(exp.classes) != first:
                raise ConfigError(f"{key}.classes: domain_incremental experiences share their classes ({first}), got {sorted(exp.classes)}")
    if kind == ScenarioKind.modality_incremental and len(exps) > 1 and len({tuple(sorted(e.modalities)) for _, e in exps}) == 1:
        raise ConfigError("stream.experiences: modality_incremental needs experiences with different `modalities`")


def _select(split: Split, classes: list[int], size: int | None, rng: np.random.Generator, key: str,
            every_class: bool = False) -> Split:
    """The samples of `classes`, class-stratified down to `size` if given; `every_class`: a size that would
    leave a class out is refused (a training split: that class would never be trained)."""
    idx = np.flatnonzero(np.isin(split.labels, classes))
    if size is not None:
        if size > len(idx):
            raise ConfigError(f"{key}: asks for {size} samples but only {len(idx)} exist for classes {classes}")
        if every_class and size < len(classes):
            raise ConfigError(f"{key}: {size} sample(s) cannot hold each of the experience's {len(classes)} classes {classes}")
        idx = rng.permutation(idx)
        labels = split.labels[idx]
        rank = np.zeros(len(idx), dtype=int)
        for c in np.unique(labels):
            rank[labels == c] = np.arange((labels == c).sum())
        idx = np.sort(idx[np.argsort(rank, kind="stable")[:size]])
    return split.subset(idx)


def _dataset(
    split: Split,
    modalities: list[str],
    missing_rate: dict[str, float],
    specs: dict[str, ModalitySpec],
    task: int,
    rng: np.random.Generator,
    key: str,
) -> Any:
    n = len(split)
    for m, rate in missing_rate.items():
        if m not in modalities:
            raise ConfigError(f"{key}.{m}: modality '{m}' is not in this experience ({modalities})")
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"{key}.{m}: missing rate must lie in [0, 1), got {rate}")
    drop = np.stack([rng.random(n) < missing_rate.get(m, 0.0) for m in modalities], 1)  # (n, M)
    drop = keep_one(np.ones_like(drop), drop, rng.random)  # a sample keeps at least one modality
    present = {m: ~drop[:, k] for k, m in enumerate(modalities)}
    ds = MultimodalDataset({m: split.inputs[m] for m in modalities}, present, split.labels, specs)
    # task-aware, so Avalanche code that splits data by task (LwF, task_set) works on it
    return TaskAwareClassificationDataset(
        [ds],
        data_attributes=[
            DataAttribute(ds.targets, "targets"),
            DataAttribute([task] * n, "targets_task_labels", use_in_getitem=True),
        ],
    )
