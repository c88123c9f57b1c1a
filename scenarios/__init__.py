"""Task streams: data sources and the builder that turns a stream config into an Avalanche benchmark."""

from lifelong_moe.errors import ConfigError, DataError, UserError
from scenarios.builder import Experience, ExperienceSpec, Stream, build_stream
from scenarios.config import ExperienceConfig, ScenarioKind, SourceConfig, SplitRuleConfig, StreamConfig
from scenarios.dataset import MultimodalDataset
from scenarios.modality import MASK_KEY, ModalitySpec
from scenarios.sources import SOURCES, SourceData, Split

__all__ = [
    "MASK_KEY",
    "SOURCES",
    "ConfigError",
    "DataError",
    "Experience",
    "ExperienceConfig",
    "ExperienceSpec",
    "ModalitySpec",
    "MultimodalDataset",
    "ScenarioKind",
    "SourceConfig",
    "SourceData",
    "Split",
    "SplitRuleConfig",
    "Stream",
    "StreamConfig",
    "UserError",
    "build_stream",
]
