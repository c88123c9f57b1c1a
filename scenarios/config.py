"""Typed schema of a task stream, as written in YAML under `stream:`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ScenarioKind(str, Enum):
    class_incremental = "class_incremental"  # new classes; no task label at test time
    task_incremental = "task_incremental"  # a task label per experience, given at test time
    domain_incremental = "domain_incremental"  # same classes, new domain or modality
    modality_incremental = "modality_incremental"  # the set of modalities changes between experiences


@dataclass
class SourceConfig:
    kind: str = "???"  # a registered data source (`lifelong-moe list sources`)
    params: dict[str, Any] = field(default_factory=dict)  # the source's settings (`lifelong-moe list sources KIND`)


@dataclass
class ExperienceConfig:
    source: str = "???"  # a name under stream.sources
    classes: list[int | str] = field(default_factory=list)  # labels, or the names a source gives its classes
    # (folders, CSV labels), e.g. [barbera, nebbiolo]; empty: every class of the source
    modalities: list[str] = field(default_factory=list)  # empty: every modality of the source
    task_label: int | None = None  # task-incremental only; defaults to the experience index
    train_size: int | None = None  # a class-stratified subsample (at least one per class); None keeps everything
    test_size: int | None = None  # a class-stratified subsample of the test split; None keeps everything
    train_missing_rate: dict[str, float] = field(default_factory=dict)  # modality -> share of samples lacking it
    test_missing_rate: dict[str, float] = field(default_factory=dict)  # modality -> share of test samples lacking it
    name: str | None = None  # shown in tables, plots and TensorBoard; default exp<index>


@dataclass
class SplitRuleConfig:
    """Shorthand for a class split: `n_experiences` experiences of equal class groups from one source."""

    source: str = "???"  # a name under stream.sources
    n_experiences: int = "???"  # experiences, each an equal share of the classes  # type: ignore[assignment]
    class_order: list[int | str] = field(default_factory=list)  # labels or names; empty: sorted, or shuffled by `shuffle_classes`
    shuffle_classes: bool = False  # without class_order: classes in a random order (fixed, seed 0) instead of sorted
    modalities: list[str] = field(default_factory=list)  # empty: every modality of the source
    train_size: int | None = None  # a class-stratified subsample of each experience's training data (at least one per
    # class); None keeps everything
    test_size: int | None = None  # a class-stratified subsample of the test split; None keeps everything
    test_missing_rate: dict[str, float] = field(default_factory=dict)  # modality -> share of test samples lacking it


@dataclass
class StreamConfig:
    scenario: ScenarioKind = ScenarioKind.class_incremental  # what changes between experiences and what the test knows
    sources: dict[str, SourceConfig] = field(default_factory=dict)  # name -> data source
    experiences: list[ExperienceConfig] = field(default_factory=list)  # the stream, in order (or give `split`)
    split: SplitRuleConfig | None = None  # shorthand for a class split of one source (instead of `experiences`)
