"""Lightning plumbing: a fresh Trainer per fit or evaluation, and the data loaders they read."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from lifelong_moe.config.schema import TrainConfig, TrainerConfig
from lifelong_moe.distributed import RankShardSampler
from lifelong_moe.errors import ConfigError, Interrupted, TrainingError
from lifelong_moe.models.continual_module import ContinualModule, LossTerm

# Lightning's start-up banners and the few-workers hint repeat for every experience; keep the output readable.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
# "Received SIGTERM": the run reports the interrupt itself, in one line
logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")


def _devices(value: str) -> Any:
    parsed = yaml.safe_load(value) if isinstance(value, str) else value
    return parsed if isinstance(parsed, (int, list)) else value


def _strategy(name: str, conditional_parameters: bool) -> Any:
    """`ddp` with unused-parameter detection where the model has parameters a batch may not reach
    (experts no token was routed to); any other name goes to Lightning unchanged."""
    if name == "ddp" and conditional_parameters:
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=True)
    return name


def make_trainer(cfg: TrainerConfig, *, max_epochs: int = 1, logger: Any = False, progress: bool | None = None,
                 conditional_parameters: bool = False, evaluation: bool = False,
                 callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """A fresh Trainer: Lightning cannot fit a second experience with a Trainer that finished one."""
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=_devices(cfg.devices),
        strategy=_strategy(cfg.strategy, conditional_parameters),
        # evaluation loaders shard themselves without repeats (RankShardSampler)
        use_distributed_sampler=not evaluation,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        # warn-only: deterministic kernels wherever they exist, without failing on the GPU where one is missing
        deterministic="warn" if cfg.deterministic else False,
        max_epochs=max_epochs,
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        # a bar drawn into a file or a pipe is a line per refresh: the run's own line per experience is the record
        enable_progress_bar=(cfg.enable_progress_bar and sys.stdout.isatty()) if progress is None else progress,
        log_every_n_steps=cfg.log_every_n_steps,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )


class StopOnNonFiniteLoss(Callback):
    """Stop a fit whose training loss became NaN or infinite, at the end of that epoch, with a TrainingError
    naming the experience and the epoch: the weights are then garbage, and must not reach a checkpoint.
    Finiteness is gathered on the device at each step and read once per epoch (no sync per step)."""

    def __init__(self, n_epochs: int) -> None:
        self.n_epochs = n_epochs
        self._finite: torch.Tensor | None = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._finite = None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            ok = torch.isfinite(loss.detach()).all()
            self._finite = ok if self._finite is None else self._finite & ok

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._finite is not None and not bool(self._finite):
            experience = getattr(pl_module, "experience", -1)
            raise TrainingError(
                f"training: the loss became NaN or infinite in experience {experience + 1}, epoch "
                f"{trainer.current_epoch + 1}/{self.n_epochs}; stopped (a smaller train.lr may help)")


def call_trainer(trainer: L.Trainer, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`trainer.fit` or `trainer.test`, with interrupts kept as interrupts. Lightning 2.6 turns Ctrl-C inside
    them into `sys.exit(1)` (after ignoring SIGINT for its shutdown), and SIGTERM into a `SystemExit`
    without a code (exit status 0, as if the run had finished): both become `Interrupted` here."""
    try:
        return fn(*args, **kwargs)
    except SIGTERMException:
        raise Interrupted(signal.SIGTERM) from None
    except SystemExit:
        if not trainer.interrupted:
            raise
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        raise Interrupted(signal.SIGINT) from None


def train_loader(dataset: Any, cfg: TrainConfig, seed: int, world_size: int = 1) -> DataLoader:
    """Shuffled loader whose order depends only on `seed`. `train.batch_size` is the global batch:
    each of `world_size` processes loads its share, so one step sees as many samples as with one process."""
    if cfg.batch_size % world_size:
        raise ConfigError(f"train.batch_size: {cfg.batch_size} does not split evenly over {world_size} processes")
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size // world_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=getattr(dataset, "collate_fn", None),
        num_workers=cfg.num_workers,
    )


def eval_loader(dataset: Any, cfg: TrainConfig) -> DataLoader:
    """In order, each process taking its share of the samples without repeats."""
    return DataLoader(dataset, batch_size=cfg.eval_batch_size, sampler=RankShardSampler(len(dataset)),
                      collate_fn=getattr(dataset, "collate_fn", None), num_workers=cfg.num_workers)


def fit_experience(model: ContinualModule, dataset: Any, train_cfg: TrainConfig, trainer_cfg: TrainerConfig,
                   seed: int, logger: Any, callbacks: Sequence[Callback] = (), loss_terms: Sequence[LossTerm] = ()) -> L.Trainer | None:
    """Fit one experience's data; under DDP each process trains on its share of every global batch.
    `callbacks` join this fit's Trainer; `loss_terms` are added to the model's loss for this fit only.
    A model with nothing to train (e.g. `stats`, whose statistics are gathered when the experience ends) is
    not fitted: None."""
    if not any(p.requires_grad for p in model.parameters()):
        return None
    trainer = make_trainer(trainer_cfg, max_epochs=train_cfg.epochs, logger=logger,
                           conditional_parameters=model.conditional_parameters,
                           callbacks=[*callbacks, StopOnNonFiniteLoss(train_cfg.epochs)])
    model.loss_terms = list(loss_terms)
    try:
        call_trainer(trainer, trainer.fit, model, train_dataloaders=train_loader(dataset, train_cfg, seed, trainer.world_size))
    finally:
        model.loss_terms = []
    device = trainer.strategy.root_device
    if device.type != "cpu":  # Lightning's teardown hands the model back on the CPU; the experience's end runs on device
        model.to(device)  # (on the CPU it is there already: another walk over every module would only cost time)
    return trainer
