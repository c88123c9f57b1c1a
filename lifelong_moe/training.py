"""Lightning plumbing: a fresh Trainer per fit or evaluation, and the data loaders they read."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from lifelong_moe.config.schema import TrainConfig, TrainerConfig
from lifelong_moe.distributed import RankShardSampler
from lifelong_moe.errors import ConfigError
from lifelong_moe.models.continual_module import ContinualModule, LossTerm

# Lightning's start-up banners and the few-workers hint repeat for every experience; keep the output readable.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
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
        enable_progress_bar=cfg.enable_progress_bar if progress is None else progress,
        log_every_n_steps=cfg.log_every_n_steps,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )


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
                   seed: int, logger: Any, callbacks: Sequence[Callback] = (), loss_terms: Sequence[LossTerm] = ()) -> L.Trainer:
    """Fit one experience's data; under DDP each process trains on its share of every global batch.
    `callbacks` join this fit's Trainer; `loss_terms` are added to the model's loss for this fit only."""
    trainer = make_trainer(trainer_cfg, max_epochs=train_cfg.epochs, logger=logger,
                           conditional_parameters=model.conditional_parameters, callbacks=callbacks)
    model.loss_terms = list(loss_terms)
    try:
        trainer.fit(model, train_dataloaders=train_loader(dataset, train_cfg, seed, trainer.world_size))
    finally:
        model.loss_terms = []
    return trainer
