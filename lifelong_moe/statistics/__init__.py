"""Class statistics in fixed feature spaces, in plain torch: the streaming statistics, the feature maps
they live in, and the classifier built on them (used alone as `model.name: stats`, and as the MoE's
experience gate). Imports neither Lightning nor Avalanche."""

from lifelong_moe.statistics.class_statistics import ClassStatistics, lda_weights
from lifelong_moe.statistics.classifier import CONDITIONALS, Features, StatisticsClassifier

__all__ = ["CONDITIONALS", "ClassStatistics", "Features", "StatisticsClassifier", "lda_weights"]
