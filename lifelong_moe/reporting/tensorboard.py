"""Stream-level TensorBoard logging: forgetting curves, ACC/BWT/FWT per step, the accuracy matrix image,
hparams with the final metrics. Lightning logs the per-experience training curves itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter

from lifelong_moe.metrics import prefix_metrics, seen_accuracy
from lifelong_moe.reporting.plots import accuracy_matrix_figure, confusion_matrix_figure, routing_mass_figure

STREAM_METRICS = ("acc", "bwt", "fwt", "forgetting")


class StreamBoard:
    """Writes stream metrics with the experience index as the step (each Trainer restarts global_step)."""

    def __init__(self, logger: TensorBoardLogger, n_experiences: int) -> None:
        self.logger = logger
        # its own writer: Lightning closes the logger's writer after every fit, and the next write would open
        # another event file; files are read in name order, whose counter suffix sorts ".10" before ".9",
        # so TensorBoard would see steps go backwards and drop events
        self.writer = SummaryWriter(log_dir=logger.log_dir)
        self.T = n_experiences
        self.writer.add_custom_scalars(
            {
                "lifelong": {
                    "forgetting curves: accuracy on each experience": ["Multiline", [r"accuracy/exp\d+"]],
                    "stream metrics": ["Multiline", [f"stream/{k}" for k in STREAM_METRICS]],
                    "accuracy on everything seen": ["Multiline", ["stream/seen_acc"]],
                    "routing accuracy per experience": ["Multiline", [r"routing_accuracy/exp\d+"]],
                    "contributions: ACC of each part alone and of the whole": ["Multiline", [r"contributions/[^/]+/acc"]],
                    "accuracy per class": ["Multiline", [r"class_accuracy/.*"]],
                }
            }
        )

    def log_step(self, step: int, R: np.ndarray, b: Sequence[float] | None, names: Sequence[str]) -> None:
        for j in range(self.T):
            self.writer.add_scalar(f"accuracy/exp{j:02d}", R[step, j], step)
        for key, value in prefix_metrics(R, step, b).items():
            if value is not None:
                self.writer.add_scalar(f"stream/{key}", value, step)
        self.writer.add_scalar("stream/seen_acc", seen_accuracy(R[: step + 1, : step + 1])[-1], step)
        fig = accuracy_matrix_figure(R, names)
        self.writer.add_figure("accuracy_matrix", fig, step)
        plt.close(fig)
        self.writer.flush()

    def log_report(self, step: int, report: dict[str, Any], names: Sequence[str]) -> None:
        """Routing accuracy per test experience (scalars) and routing mass heatmaps (images), if the model routes;
        the statistics' choices for the experience just learned (e.g. `statistics/pooling/shares`)."""
        if "routing_accuracy" not in report:
            return
        for j, acc in enumerate(report["routing_accuracy"]):
            self.writer.add_scalar(f"routing_accuracy/exp{j:02d}", acc, step)
        for name, value in report.get("communication", {}).get("scalars", {}).items():
            self.writer.add_scalar(f"communication/{name}", value, step)
        # what the class statistics (and the expert weight) chose at this experience's end
        for name, value in report.get("statistics", {}).get("chosen_per_experience", {}).get(step, {}).items():
            self.writer.add_scalar(f"statistics/{name}", value, step)
        fig = routing_mass_figure(report, names)
        self.writer.add_figure("routing_mass", fig, step)
        plt.close(fig)
        self.writer.flush()

    def log_contributions(self, step: int, parts: dict[str, Any]) -> None:
        """ACC and BWT of each part of the model alone and of the whole (results.json `contributions`)."""
        for name, part in parts.items():
            for key in ("acc", "bwt"):
                if part.get(key) is not None:
                    self.writer.add_scalar(f"contributions/{name}/{key}", part[key], step)
        self.writer.flush()

    def log_classes(self, step: int, record: dict[str, Any], class_names: Sequence[str]) -> None:
        """Accuracy of each class with test samples, by name (`class_accuracy/<name>`), and the confusion matrix."""
        if not record:
            return
        for c, acc in enumerate(record["accuracy"]):
            if acc is not None:
                self.writer.add_scalar(f"class_accuracy/{class_names[c]}", acc, step)
        fig = confusion_matrix_figure(np.asarray(record["confusion_matrix"]), class_names)
        self.writer.add_figure("confusion_matrix", fig, step)
        plt.close(fig)
        self.writer.flush()

    def log_modality(self, step: int, record: dict[str, Any]) -> None:
        """Imbalance after each experience: token share and single-modality accuracy per modality."""
        for m, share in record.get("token_share", {}).items():
            self.writer.add_scalar(f"modality/token_share/{m}", share, step)
        for m, res in record.get("single_modality", {}).items():
            if res["accuracy"] is not None:
                self.writer.add_scalar(f"modality/alone_accuracy/{m}", res["accuracy"], step)

    def log_robustness(self, robustness: dict[str, Any], step: int) -> None:
        """Accuracy per subset of modalities (at the last step), and accuracy against the missing rate
        (a curve whose x axis, the step, is the rate in percent)."""
        for name, res in robustness.get("subsets", {}).items():
            if res["accuracy"] is not None:
                self.writer.add_scalar(f"modality/subset_accuracy/{name}", res["accuracy"], step)
        for rate, res in robustness.get("missing_rate", {}).items():
            if res["accuracy"] is not None:
                self.writer.add_scalar("modality/accuracy_vs_missing_rate_percent", res["accuracy"], round(float(rate) * 100))

    def log_final(self, hparams: dict[str, Any], metrics: dict[str, Any]) -> None:
        final = {f"hparams/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        self.logger.log_hyperparams(hparams, final)
        self.writer.close()
