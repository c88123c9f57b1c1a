"""The LightningModule contract of a continual model.

The runner calls `on_experience_start(exp)` before each experience is trained (grow, freeze, add a
modality) and `on_experience_end(exp)` after. Every model implements `logits(inputs, task_labels)`: scores
over every class of the stream, before classes the model may not predict are masked; `forward` masks them.
Evaluation belongs to `lifelong_moe.evaluation`: `test_step` returns a `Prediction`, and measurements
specific to a model (e.g. routing statistics) are `evaluation_probes()` the evaluator runs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lifelong_moe.config.schema import TrainConfig
from lifelong_moe.errors import InputError
from lifelong_moe.models.encoders import build_encoder
from scenarios import Experience
from scenarios.augment import shift_augment
from scenarios.masking import drop_modalities
from scenarios.modality import MASK_KEY, ModalitySpec

Batch = tuple[dict[str, Any], torch.Tensor, torch.Tensor]
LossTerm = Callable[["ContinualModule", dict[str, Any], torch.Tensor, torch.Tensor], torch.Tensor]
"""`term(model, inputs, labels, logits) -> scalar`: added to the model's own training loss."""


@dataclass
class Prediction:
    """What `test_step` gives the evaluator: masked logits (B, C), model-specific details for probes, and
    the masked logits of each part of the model alone (`parts`, e.g. {"statistics": ..., "experts": ...}):
    the evaluator counts every part's accuracy beside the whole model's, so each run reports what each
    part contributes."""

    logits: torch.Tensor
    details: Any = None
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """`train.optimizer` over parameters or parameter groups (the one place optimizers are chosen)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _check_modality(name: str, x: torch.Tensor, spec: Any) -> None:
    """A batch of modality `name` must match the shape and dtype kind the model built its encoder for."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"modality '{name}': expected a tensor, got {type(x).__name__}")
    if tuple(x.shape[1:]) != tuple(spec.shape):
        raise InputError(f"modality '{name}': samples of shape {tuple(x.shape[1:])}, but the model's encoder expects {tuple(spec.shape)}")
    expects_tokens = spec.vocab_size is not None or not spec.dtype.startswith("float")
    if expects_tokens == x.is_floating_point():
        raise InputError(f"modality '{name}': dtype {x.dtype}, but the model expects {spec.dtype}")


class ContinualModule(L.LightningModule):
    """Per-modality encoders grown as modalities arrive, masked-mean fusion, scores over all stream classes.

    Logits of classes not yet seen are masked out (class-incremental); with task labels (task-incremental)
    only the task's classes compete. Subclasses define `logits(inputs, task_labels)`."""

    # Whether a batch can leave trainable parameters unused (an encoder of a modality no sample in the
    # batch has, an expert no token was routed to); DDP must then look for them at every step.
    conditional_parameters: bool = True
    # The parts a model reports alone beside its whole prediction (`Prediction.parts`), e.g. ("statistics",
    # "experts"): the evaluator measures each one's accuracy, and results.json shows what each contributes.
    part_names: tuple[str, ...] = ()
    # Set on the throwaway model that `lifelong_moe.preparation` grows through the stream before a run: fitting
    # at an experience's end that refines numbers but changes no structure or shape may then be skipped.
    rehearsing: bool = False

    def __init__(self, *, n_classes: int, scenario: str, train: TrainConfig, embed_dim: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.task_incremental = scenario == "task_incremental"
        self.train_cfg = train
        self.embed_dim = embed_dim
        self.encoders = nn.ModuleDict()
        self.modality_specs: dict[str, Any] = {}
        self.modality_embed = nn.ParameterDict()
        self.register_buffer("seen_classes", torch.zeros(n_classes, dtype=torch.bool))
        self.register_buffer("task_classes", torch.zeros(0, n_classes, dtype=torch.bool))
        self.experience = -1
        self.loss_terms: list[LossTerm] = []  # set by a strategy for the length of a fit
        self._epoch_sums: torch.Tensor | None = None

    # ---- lifelong hooks -------------------------------------------------------------------------
    def on_experience_start(self, exp: Experience) -> None:
        """Adapt to a new experience before it is trained: new modalities get encoders, classes get enabled."""
        self.experience = exp.index
        for name, spec in exp.modality_specs.items():
            if name not in self.modality_specs:
                self.add_modality(name, spec)
        classes = torch.as_tensor(exp.classes, device=self.seen_classes.device)
        self.seen_classes[classes] = True
        task = int(exp.task_label)
        if task >= len(self.task_classes):
            grown = torch.zeros(task + 1, self.n_classes, dtype=torch.bool, device=self.task_classes.device)
            grown[: len(self.task_classes)] = self.task_classes
            self.task_classes = grown
        self.task_classes[task, classes] = True

    def on_experience_end(self, exp: Experience) -> None:
        """Called after an experience is trained, before evaluation."""

    def add_modality(self, name: str, spec: ModalitySpec) -> None:
        self.modality_specs[name] = spec
        self.encoders[name] = build_encoder(spec, self.embed_dim, name).to(self.device)
        self.modality_embed[name] = nn.Parameter(torch.zeros(self.embed_dim, device=self.device))

    # ---- forward --------------------------------------------------------------------------------
    def modality_tokens(self, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One (B, D) token per modality the model knows and the batch carries, and its (B,) presence mask."""
        mask = inputs.get(MASK_KEY, {})
        tokens, present = {}, {}
        for name, encoder in self.encoders.items():
            if name not in inputs:
                continue
            x = inputs[name]
            _check_modality(name, x, self.modality_specs[name])
            tokens[name] = encoder(x) + self.modality_embed[name]
            flag = mask.get(name)
            present[name] = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if flag is None else flag.to(torch.bool)
        if not tokens:
            raise ValueError(f"the batch holds none of the model's modalities ({sorted(self.encoders)}); got {sorted(inputs)}")
        return tokens, present

    def presence(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """(B,) bool per modality the model knows and the batch holds."""
        mask = inputs.get(MASK_KEY, {})
        return {m: mask[m].bool() if m in mask else torch.ones(len(inputs[m]), dtype=torch.bool, device=inputs[m].device)
                for m in self.modality_specs if m in inputs}

    def batches(self, dataset: Any) -> Iterator[tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]]:
        """(inputs, presence per modality, labels) of every sample of `dataset`, in order, on the model's device."""
        loader = DataLoader(dataset, batch_size=512, shuffle=False, collate_fn=getattr(dataset, "collate_fn", None))
        for x, y, _ in loader:
            x = L.LightningModule.transfer_batch_to_device(self, x, self.device, 0)
            yield x, self.presence(x), y.to(self.device)

    def fuse(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Masked mean of the present modalities' tokens: (B, D). Absent modalities contribute nothing."""
        tokens, present = self.modality_tokens(inputs)
        z = torch.stack(list(tokens.values()), 1)  # (B, M, D)
        w = torch.stack(list(present.values()), 1).to(z.dtype).unsqueeze(-1)  # (B, M, 1)
        return (z * w).sum(1) / w.sum(1).clamp_min(1.0)

    def logits(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C) scores over every class of the stream, unmasked (what DER regresses, for example)."""
        raise NotImplementedError

    def class_mask(self, task_labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, C) bool: the classes each sample may be assigned to."""
        if self.task_incremental and task_labels is not None and len(self.task_classes):
            return self.task_classes[task_labels.clamp_max(len(self.task_classes) - 1)]
        return self.seen_classes.unsqueeze(0).expand(batch, -1)

    def forward(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.logits(inputs, task_labels)  # (B, C)
        mask = self.class_mask(task_labels, logits.shape[0])
        return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)

    # ---- training -------------------------------------------------------------------------------
    def training_loss(self, x: dict[str, Any], y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of one batch; models with auxiliary losses extend this."""
        logits = self(x, t)
        return F.cross_entropy(logits, y), logits

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, y, t = batch
        x = shift_augment(drop_modalities(x, self.train_cfg.modality_dropout, list(self.encoders)), self.train_cfg.shift_augment)
        loss, logits = self.training_loss(x, y, t)
        for term in self.loss_terms:
            loss = loss + term(self, x, y, logits)
        detached = loss.detach()
        self._accumulate(detached, (logits.argmax(1) == y).sum(), len(y))
        if self.logger is not None and self.trainer.global_step % self.trainer.log_every_n_steps == 0:
            self.logger.log_metrics({f"train_loss_step/exp{self.experience:02d}": detached.item()}, step=self.trainer.global_step)
        return loss

    # Training curves go straight to the logger: `self.log` costs about 1.5 ms a call through Lightning's
    # result collection, a large share of a small model's step (see experiments/bench_overhead.py).
    def _accumulate(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        """Running sums of the epoch's loss and correct predictions, kept on device (no sync per step)."""
        if self._epoch_sums is None:
            self._epoch_sums = torch.zeros(3, device=loss.device)
        self._epoch_sums += torch.stack([loss.float() * n, correct.float(), loss.new_full((), float(n), dtype=torch.float32)])

    def on_train_epoch_start(self) -> None:
        self._epoch_sums = None

    def on_train_epoch_end(self) -> None:
        if self._epoch_sums is None:
            return
        loss_sum, correct, n = self.trainer.strategy.reduce(self._epoch_sums, reduce_op="sum").tolist()
        if self.logger is not None:
            tag = f"exp{self.experience:02d}"
            self.logger.log_metrics({f"train_loss/{tag}": loss_sum / n, f"train_acc/{tag}": correct / n}, step=self.current_epoch)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if device.type == "cpu":  # already there; skip walking the nested input dict every step
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups to optimize; only trainable ones, so frozen parameters get no optimizer state."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer_param_groups(), self.train_cfg)

    # ---- evaluation: predictions for the evaluator, and the probes it should run -------------------
    def evaluation_step(self, inputs: dict[str, Any], task_labels: torch.Tensor | None) -> Prediction:
        return Prediction(self(inputs, task_labels))

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Prediction:
        x, _, t = batch
        return self.evaluation_step(x, t)

    def evaluation_probes(self) -> list[Any]:
        """Measurements specific to this model, run by the evaluator alongside accuracy
        (objects with `start`, `update` and `compute`; see `lifelong_moe.models.probe.Probe`)."""
        return []

    def setup(self, stage: str) -> None:
        """Under DDP, stop before wrapping if the processes grew different structures: each grows on its own,
        so a difference would mean a nondeterministic growth decision, and DDP would then mix unrelated weights."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        mine = json.dumps(self.structure_state(), sort_keys=True, default=str)
        everyone: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everyone, mine)
        differing = [rank for rank, other in enumerate(everyone) if other != everyone[0]]
        if differing:
            raise RuntimeError(f"ranks {differing} grew a structure different from rank 0's before experience {self.experience}")

    # ---- checkpoints: the grown structure is rebuilt before the weights load ----------------------
    def structure_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this module's shape (not its weights) in a fresh instance."""
        return {
            "experience": self.experience,
            "modalities": {m: spec.to_dict() for m, spec in self.modality_specs.items()},
            "n_tasks": len(self.task_classes),
            "trainable": sorted(n for n, p in self.named_parameters() if p.requires_grad),
        }

    def restore_structure(self, state: dict[str, Any]) -> None:
        """Grow a freshly built module to the saved shape; `load_state_dict` then fills in the values."""
        self.experience = state["experience"]
        for m, spec in state["modalities"].items():
            if m not in self.modality_specs:
                d = dict(spec)
                self.add_modality(m, ModalitySpec(d["kind"], tuple(d["shape"]), d["dtype"], d["vocab_size"]))
        self.task_classes = torch.zeros(state["n_tasks"], self.n_classes, dtype=torch.bool, device=self.task_classes.device)

    def apply_trainable(self, names: list[str]) -> None:
        """Set requires_grad from a saved list of trainable parameter names (the freeze state)."""
        keep = set(names)
        for n, p in self.named_parameters():
            p.requires_grad_(n in keep)

    # ---- accounting -----------------------------------------------------------------------------
    def structure_summary(self) -> dict[str, Any]:
        """How the model grew at the current experience (experts, groups), for results.json; read when the
        experience starts and again when it ends (so it may also say what training changed)."""
        return {}

    def stored_bytes(self) -> int:
        """Bytes the model keeps about past data beyond its parameters (statistics, keys); never samples."""
        return 0

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable}
