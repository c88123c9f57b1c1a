"""A plain multimodal classifier: per-modality encoders, masked-mean fusion, an MLP trunk, one head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lifelong_moe.config.schema import TrainConfig
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.registry import MODELS


@dataclass
class MultimodalMLPParams:
    embed_dim: int = 64  # width of each modality's token before fusion
    hidden_dim: int = 128  # width of the MLP's hidden layers
    depth: int = 2  # hidden layers of the MLP


class MultimodalMLP(ContinualModule):
    def __init__(self, params: MultimodalMLPParams, *, n_classes: int, scenario: str, train: TrainConfig) -> None:
        super().__init__(n_classes=n_classes, scenario=scenario, train=train, embed_dim=params.embed_dim)
        layers, width = [], params.embed_dim
        for _ in range(params.depth):
            layers += [nn.Linear(width, params.hidden_dim), nn.ReLU()]
            width = params.hidden_dim
        self.mlp = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, n_classes)

    def logits(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.mlp(self.fuse(inputs)))


@MODELS.register("multimodal_mlp", params=MultimodalMLPParams, backbone=True)
def multimodal_mlp(params: MultimodalMLPParams, **kwargs: Any) -> MultimodalMLP:
    """Dense baseline: modality encoders, masked-mean fusion, MLP, one head over all classes."""
    return MultimodalMLP(params, **kwargs)
