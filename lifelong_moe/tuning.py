"""Choosing the training budget on validation data, never on the test data: the dense backbone trained
jointly on every experience's training split, scored after every epoch on the union of the experiences'
validation splits (`train.validation_fraction`), for each candidate learning rate. The best (lr, epochs)
is what a careful practitioner would give every baseline of the stream."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import ConcatDataset

from lifelong_moe.config import ComponentConfig, ExperimentConfig
from lifelong_moe.errors import ConfigError
from lifelong_moe.features import build_experiment_stream
from lifelong_moe.runner import build_model
from lifelong_moe.training import eval_loader, fit_experience


@dataclass
class Tuning:
    lr: float
    epochs: int
    validation_accuracy: float
    curves: dict[float, list[float]] = field(default_factory=dict)  # lr -> validation accuracy after each epoch


class _ValidationCurve(Callback):
    def __init__(self, loader: Any) -> None:
        self.loader, self.accuracy = loader, []

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: Any, model: Any) -> None:
        model.eval()
        correct = total = 0
        for x, y, t in self.loader:
            x = model.transfer_batch_to_device(x, model.device, 0)
            y = y.to(model.device)
            correct += int((model(x, t.to(model.device)).argmax(1) == y).sum())
            total += len(y)
        self.accuracy.append(correct / max(total, 1))
        model.train()


def tune_joint(cfg: ExperimentConfig, backbone: ComponentConfig, lrs: Sequence[float] = (1e-3, 3e-3, 1e-2),
               max_epochs: int = 40, progress: Callable[[str], None] = print) -> Tuning:
    """(lr, epochs) of the backbone trained jointly, by validation accuracy; ties go to fewer epochs."""
    if cfg.train.validation_fraction <= 0:
        raise ConfigError("train.validation_fraction: tuning needs validation splits; set it above 0 (e.g. 0.1)")
    stream = build_experiment_stream(cfg, progress=lambda _: None)
    train = ConcatDataset([e.dataset for e in stream.train_stream])
    val = [e.validation for e in stream.train_stream if e.validation is not None]
    loader = eval_loader(_with_collate(ConcatDataset(val), stream), cfg.train)
    curves: dict[float, list[float]] = {}
    best = (-1.0, 0.0, 0)
    for lr in lrs:
        run_cfg = copy.deepcopy(cfg)
        run_cfg.model, run_cfg.train.lr, run_cfg.train.epochs = copy.deepcopy(backbone), lr, max_epochs
        torch.manual_seed(cfg.seed)
        model = build_model(run_cfg, stream)
        for exp in stream.train_stream:
            model.on_experience_start(exp)
        curve = _ValidationCurve(loader)
        fit_experience(model, _with_collate(train, stream), run_cfg.train, run_cfg.trainer, seed=cfg.seed, logger=False,
                       callbacks=[curve])
        curves[lr] = curve.accuracy
        for epoch, acc in enumerate(curve.accuracy, start=1):
            if acc > best[0] + 1e-12:
                best = (acc, lr, epoch)
        progress(f"[tune] lr {lr:g}: best validation accuracy {max(curve.accuracy):.3f} at epoch {1 + curve.accuracy.index(max(curve.accuracy))}")
    return Tuning(lr=best[1], epochs=best[2], validation_accuracy=best[0], curves=curves)


def _with_collate(data: ConcatDataset, stream: Any) -> ConcatDataset:
    data.collate_fn = stream.train_stream[0].dataset.collate_fn  # the loaders read it from the dataset
    return data
