"""LightningModules for lifelong learning; importing this package registers them in `MODELS`."""

from lifelong_moe.models import moe_model, multimodal_mlp, stats_model  # noqa: F401
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.models.encoders import ENCODERS, build_encoder

__all__ = ["ENCODERS", "ContinualModule", "build_encoder"]
