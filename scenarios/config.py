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
    kind: str = "???"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperienceConfig:
    source: str = "???"
    classes: list[int] = field(default_factory=list)  # empty: every class of the source
    modalities: list[str] = field(default_factory=list)  # empty: every modality of the source
    task_label: int | None = None  # task-incremental only; defaults to the experience index
    train_size: int | None = None  # a class-stratified subsample; None keeps everything
    test_size: int | None = None
    train_missing_rate: dict[str, float] = field(default_factory=dict)  # modality -> share of samples lacking it
    test_missing_rate: dict[str, float] = field(default_factory=dict)
    name: str | None = None


@dataclass
class SplitRuleConfig:
    """Shorthand for a class split: `n_experiences` experiences of equal class groups from one source."""

    source: str = "???"
    n_experiences: int = "???"  # type: ignore[assignment]
    class_order: list[int] = field(default_factory=list)  # empty: sorted, or shuffled by `shuffle_classes`
    shuffle_classes: bool = False
    modalities: list[str] = field(default_factory=list)
    train_size: int | None = None
    test_size: int | None = None
    test_missing_rate: dict[str, float] = field(default_factory=dict)


@dataclass
class StreamConfig:
    scenario: ScenarioKind = ScenarioKind.class_incremental
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    experiences: list[ExperienceConfig] = field(default_factory=list)
    split: SplitRuleConfig | None = None
