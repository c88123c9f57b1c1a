"""One evaluation pass: a fresh evaluation Trainer runs `test_step` over the test loaders; a callback
counts accuracy per loader with torchmetrics (synchronised across processes) and feeds the probes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lifelong_moe.config.schema import TrainerConfig
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.models.probe import Probe
from lifelong_moe.training import call_trainer, make_trainer


class _Measure(Callback):
    """Accuracy per test loader, of the whole model and of each part it reports (`Prediction.parts`), and
    the probes' sums, fed from what `test_step` returns."""

    def __init__(self, n_loaders: int, n_classes: int, probes: Sequence[Probe], per_class: bool = False) -> None:
        self.n_loaders, self.n_classes, self.probes, self.per_class = n_loaders, n_classes, list(probes), per_class
        self.accuracy: dict[str, list[MulticlassAccuracy]] = {}
        self.confusion: MulticlassConfusionMatrix | None = None
        self.values: list[float] = []
        self.parts: dict[str, list[float]] = {}
        self.report: dict[str, Any] = {}

    def on_test_start(self, trainer: Any, model: ContinualModule) -> None:
        # allocated here, once Lightning has moved the model to its device; every process allocates the same
        self.accuracy = {name: [MulticlassAccuracy(num_classes=self.n_classes, average="micro").to(model.device)
                                for _ in range(self.n_loaders)] for name in (WHOLE, *model.part_names)}
        if self.per_class:  # over every test experience together
            self.confusion = MulticlassConfusionMatrix(num_classes=self.n_classes).to(model.device)
        for probe in self.probes:
            probe.start(model, self.n_loaders)

    def on_test_batch_end(self, trainer: Any, model: ContinualModule, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        predicted = outputs.logits.argmax(1)
        self.accuracy[WHOLE][dataloader_idx].update(predicted, batch[1])
        if self.confusion is not None:
            self.confusion.update(predicted, batch[1])
        for name in model.part_names:
            self.accuracy[name][dataloader_idx].update(outputs.parts[name].argmax(1), batch[1])
        for probe in self.probes:
            probe.update(model, outputs, batch, dataloader_idx)

    def on_test_end(self, trainer: Any, model: ContinualModule) -> None:
        computed = {name: [float(m.compute()) for m in counters] for name, counters in self.accuracy.items()}
        self.values = computed.pop(WHOLE)
        self.parts = computed
        if self.confusion is not None:
            self.report["per_class"] = class_record(self.confusion.compute())
        reduce = lambda t: trainer.strategy.reduce(t, reduce_op="sum")  # noqa: E731
        for probe in self.probes:
            self.report.update(probe.compute(model, reduce))


WHOLE = "\0model"  # the whole model's counters, apart from the parts' names


def class_record(confusion: torch.Tensor) -> dict[str, Any]:
    """Per-class accuracy (recall: correct / samples of the class; None for a class without test samples) and
    the confusion matrix [true class][predicted class], from torchmetrics' confusion counts."""
    counts = confusion.long().cpu()
    support = counts.sum(1)
    correct = counts.diagonal()
    accuracy = [float(correct[c]) / float(support[c]) if support[c] else None for c in range(len(counts))]
    return {"accuracy": accuracy, "support": support.tolist(), "confusion_matrix": counts.tolist()}


def measure(model: ContinualModule, loaders: Sequence[DataLoader], trainer_cfg: TrainerConfig, probes: Sequence[Probe] = (),
            per_class: bool = False) -> tuple[list[float], dict[str, Any], dict[str, list[float]]]:
    """Accuracy on each loader, the probes' merged report, and each part's accuracy on each loader, with a
    fresh evaluation Trainer. With `per_class`, the report also holds `per_class` (`class_record` over
    every loader together)."""
    probe = _Measure(len(loaders), model.n_classes, probes, per_class)
    trainer = make_trainer(trainer_cfg, logger=False, progress=False, evaluation=True, callbacks=[probe])
    call_trainer(trainer, trainer.test, model, dataloaders=list(loaders), verbose=False)
    return probe.values, probe.report, probe.parts
