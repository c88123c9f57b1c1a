"""One evaluation pass: a fresh evaluation Trainer runs `test_step` over the test loaders; a callback
counts accuracy per loader with torchmetrics (synchronised across processes) and feeds the probes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from lifelong_moe.config.schema import TrainerConfig
from lifelong_moe.models.continual_module import ContinualModule
from lifelong_moe.models.probe import Probe
from lifelong_moe.training import call_trainer, make_trainer


class _Measure(Callback):
    """Accuracy per test loader, of the whole model and of each part it reports (`Prediction.parts`), and
    the probes' sums, fed from what `test_step` returns."""

    def __init__(self, n_loaders: int, n_classes: int, probes: Sequence[Probe]) -> None:
        self.n_loaders, self.n_classes, self.probes = n_loaders, n_classes, list(probes)
        self.accuracy: dict[str, list[MulticlassAccuracy]] = {}
        self.values: list[float] = []
        self.parts: dict[str, list[float]] = {}
        self.report: dict[str, Any] = {}

    def on_test_start(self, trainer: Any, model: ContinualModule) -> None:
        # allocated here, once Lightning has moved the model to its device; every process allocates the same
        self.accuracy = {name: [MulticlassAccuracy(num_classes=self.n_classes, average="micro").to(model.device)
                                for _ in range(self.n_loaders)] for name in (WHOLE, *model.part_names)}
        for probe in self.probes:
            probe.start(model, self.n_loaders)

    def on_test_batch_end(self, trainer: Any, model: ContinualModule, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self.accuracy[WHOLE][dataloader_idx].update(outputs.logits.argmax(1), batch[1])
        for name in model.part_names:
            self.accuracy[name][dataloader_idx].update(outputs.parts[name].argmax(1), batch[1])
        for probe in self.probes:
            probe.update(model, outputs, batch, dataloader_idx)

    def on_test_end(self, trainer: Any, model: ContinualModule) -> None:
        computed = {name: [float(m.compute()) for m in counters] for name, counters in self.accuracy.items()}
        self.values = computed.pop(WHOLE)
        self.parts = computed
        reduce = lambda t: trainer.strategy.reduce(t, reduce_op="sum")  # noqa: E731
        for probe in self.probes:
            self.report.update(probe.compute(model, reduce))


WHOLE = "\0model"  # the whole model's counters, apart from the parts' names


def measure(model: ContinualModule, loaders: Sequence[DataLoader], trainer_cfg: TrainerConfig,
            probes: Sequence[Probe] = ()) -> tuple[list[float], dict[str, Any], dict[str, list[float]]]:
    """Accuracy on each loader, the probes' merged report, and each part's accuracy on each loader, with a
    fresh evaluation Trainer."""
    probe = _Measure(len(loaders), model.n_classes, probes)
    trainer = make_trainer(trainer_cfg, logger=False, progress=False, evaluation=True, callbacks=[probe])
    call_trainer(trainer, trainer.test, model, dataloaders=list(loaders), verbose=False)
    return probe.values, probe.report, probe.parts
