"""Lightning plumbing for one experience: a fresh Trainer to fit, another to evaluate every test experience."""

from __future__ import annotations

import logging
import warnings
from typing import Any, List, Optional, Sequence

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader

from lifelong_moe.config.schema import TrainConfig, TrainerConfig
from lifelong_moe.models.continual_module import ContinualModule

# Lightning's start-up banners and the few-workers hint repeat for every experience; keep the output readable.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")


def _devices(value: str) -> Any:
    parsed = yaml.safe_load(value) if isinstance(value, str) else value
    return parsed if isinstance(parsed, (int, list)) else value


def make_trainer(cfg: TrainerConfig, *, max_epochs: int = 1, logger: Any = False, progress: Optional[bool] = None) -> L.Trainer:
    """A fresh Trainer: Lightning cannot fit a second experience with a Trainer that finished one."""
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=_devices(cfg.devices),
        strategy=cfg.strategy,
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
    )


def train_loader(dataset: Any, cfg: TrainConfig, seed: int) -> DataLoader:
    """Shuffled loader whose order depends only on `seed`."""
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=getattr(dataset, "collate_fn", None),
        num_workers=cfg.num_workers,
    )


def eval_loaders(test_stream: Any, cfg: TrainConfig) -> List[DataLoader]:
    return [
        DataLoader(exp.dataset, batch_size=cfg.eval_batch_size, shuffle=False,
                   collate_fn=getattr(exp.dataset, "collate_fn", None), num_workers=cfg.num_workers)
        for exp in test_stream
    ]


def fit_experience(model: ContinualModule, loader: DataLoader, trainer_cfg: TrainerConfig, epochs: int, logger: Any) -> L.Trainer:
    trainer = make_trainer(trainer_cfg, max_epochs=epochs, logger=logger)
    trainer.fit(model, train_dataloaders=loader)
    return trainer


def evaluate(model: ContinualModule, loaders: Sequence[DataLoader], trainer_cfg: TrainerConfig) -> List[float]:
    """Accuracy on each test experience (torchmetrics, synchronised across processes)."""
    model.start_evaluation(len(loaders))
    trainer = make_trainer(trainer_cfg, logger=False, progress=False)
    trainer.test(model, dataloaders=list(loaders), verbose=False)
    return model.finish_evaluation()
