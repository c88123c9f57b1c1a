"""Continual metrics: pure functions of the accuracy matrix."""

from lifelong_moe.metrics.continual import (
    average_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    contributions,
    final_average_accuracy,
    first_last_forgetting,
    forgetting_matrix,
    forgetting_per_experience,
    forward_transfer,
    intransigence,
    prefix_metrics,
    seen_accuracy,
    summarize,
)

__all__ = [
    "average_forgetting", "average_incremental_accuracy", "backward_transfer", "contributions", "final_average_accuracy",
    "first_last_forgetting", "forgetting_matrix", "forgetting_per_experience", "forward_transfer",
    "intransigence", "prefix_metrics", "seen_accuracy", "summarize",
]
