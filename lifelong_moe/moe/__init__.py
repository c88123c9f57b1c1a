"""The MoE core in plain torch: router, expert pool, sparse dispatch, auxiliary losses, growth policies,
communication modes and the shared experts' anchor. Imports neither Lightning nor Avalanche."""

from lifelong_moe.moe.communication import COMMUNICATION, CommunicationMode
from lifelong_moe.moe.dispatch import dense_reference, sparse_dispatch
from lifelong_moe.moe.expert_pool import ExpertPool, MLPExpert
from lifelong_moe.moe.growth import GROWTH, GrowthDecision, GrowthSignals, decide_growth
from lifelong_moe.moe.layer import MoELayer, MoEOutput
from lifelong_moe.moe.losses import load_balancing_loss, router_z_loss
from lifelong_moe.moe.router import Routing, TopKRouter

__all__ = [
    "COMMUNICATION",
    "GROWTH",
    "CommunicationMode",
    "ExpertPool",
    "GrowthDecision",
    "GrowthSignals",
    "MLPExpert",
    "MoELayer",
    "MoEOutput",
    "Routing",
    "TopKRouter",
    "decide_growth",
    "dense_reference",
    "load_balancing_loss",
    "router_z_loss",
    "sparse_dispatch",
]
