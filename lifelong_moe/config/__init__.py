"""Experiment config: typed schema and loading."""

from lifelong_moe.config.loading import config_from_dict, load_config, to_container, to_yaml
from lifelong_moe.config.schema import ComponentConfig, ExperimentConfig, OutputConfig, TrainConfig, TrainerConfig

__all__ = [
    "ComponentConfig", "ExperimentConfig", "OutputConfig", "TrainConfig", "TrainerConfig",
    "config_from_dict", "load_config", "to_container", "to_yaml",
]
