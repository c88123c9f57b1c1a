"""Evaluation, in one place: accuracy on every test experience (R's rows), the model's own probes
(e.g. routing statistics), and robustness to missing modalities. The runner owns one `Evaluator`."""

from lifelong_moe.evaluation.evaluator import Evaluation, Evaluator
from lifelong_moe.evaluation.measure import measure
from lifelong_moe.models.probe import Probe, Reduce

__all__ = ["Evaluation", "Evaluator", "Probe", "Reduce", "measure"]
