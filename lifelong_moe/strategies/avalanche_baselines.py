"""Avalanche's strategies as baselines, on the stream and model a config defines.

Each baseline trains the config's model (normally the dense `multimodal_mlp`) with Avalanche's own
template and plugins; the runner grows the model and evaluates it exactly as for native strategies.
Multimodal mini-batches reach Avalanche as `scenarios.batch.ModalityBatch`, which supports the tensor
operations its templates and plugins use (`.to`, slicing, `torch.cat`), so nothing is flattened.

Not offered, because their assumptions do not hold for a shared multimodal backbone: iCaRL (needs
`feature_extractor`/`classifier` submodules and stores exemplars as one input tensor of a fixed shape),
Avalanche's PNN (its own column architecture over flat vectors, so not the same backbone) and Expert Gate
(AlexNet autoencoders over 3-channel images)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lifelong_moe.config.schema import TrainerConfig
from lifelong_moe.errors import ConfigError, TrainingError
from lifelong_moe.models.continual_module import ContinualModule, make_optimizer
from lifelong_moe.registry import STRATEGIES
from lifelong_moe.strategies.base import FitContext
from scenarios import Experience
from scenarios.augment import shift_augment

# The runner evaluates and logs; Avalanche's own evaluator is given no loggers on purpose.
warnings.filterwarnings("ignore", message="No loggers specified, metrics will not be logged")


class AvalancheBackbone(nn.Module):
    """The model as Avalanche sees it: `forward(x)` gives logits over every stream class.

    By default the logits of classes not seen yet are masked, exactly as when the native strategies train
    the same model. Measured on the default stream (10 epochs, Avalanche's Naive): accuracy on the second
    experience 0.90 masked, 0.57 unmasked. DER must see every logit (it regresses stored logits, and a
    masked entry is -inf), so it trains the unmasked head."""

    def __init__(self, module: ContinualModule, mask_unseen: bool = True) -> None:
        super().__init__()
        self.module = module
        self.mask_unseen = mask_unseen

    def forward(self, x: dict[str, Any]) -> torch.Tensor:
        if self.training:  # the same augmentation as the native strategies' training steps
            x = type(x)(shift_augment(x, self.module.train_cfg.shift_augment))
        return self.module(x, None) if self.mask_unseen else self.module.logits(x)


def _device(trainer: TrainerConfig) -> torch.device:
    if trainer.accelerator in ("gpu", "cuda") or (trainer.accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class AvalancheBaseline:
    """One Avalanche template per run, built at the first experience and kept: its plugins hold the
    strategy's state (buffers, importances, old models) across experiences."""

    template_name = ""
    memory = "none"
    mask_unseen = True
    buffer_param: str | None = None  # the params field that sizes its buffer of past samples
    per_experience = False

    def stored_samples(self, experiences: list[Experience], index: int) -> int:
        if self.buffer_param is None:
            return 0
        size = int(getattr(self.params, self.buffer_param))
        seen = sum(e.spec.n_train for e in experiences[: index + 1])
        return min(size * (index + 1) if self.per_experience else size, seen)

    def __init__(self, params: Any = None) -> None:
        self.params = params
        self._template: Any = None

    def template_kwargs(self) -> dict[str, Any]:
        return dict(vars(self.params)) if self.params is not None else {}

    def check(self, trainer: TrainerConfig, resume: bool) -> None:
        if trainer.strategy.startswith("ddp") or trainer.strategy in ("fsdp", "deepspeed"):
            raise ConfigError(f"trainer.strategy: Avalanche baselines train in one process; got {trainer.strategy!r}")
        if resume:
            raise ConfigError("--resume: Avalanche baselines keep their state in Avalanche plugins, which are not checkpointed")

    def fit(self, model: ContinualModule, experiences: list[Experience], index: int, ctx: FitContext) -> None:
        if self._template is None:
            self._template = self._build(model, ctx)
        # parameters added since the last experience (new modality encoders) join the optimizer in
        # Avalanche's own make_optimizer, which runs at the start of every experience
        torch.manual_seed(ctx.seed)  # Avalanche's loaders shuffle with the global generator
        self._template.train(experiences[index].avalanche, num_workers=ctx.train.num_workers)

    def _build(self, model: ContinualModule, ctx: FitContext) -> Any:
        from avalanche.training import supervised
        from avalanche.training.plugins import EvaluationPlugin

        device = _device(ctx.trainer)
        backbone = AvalancheBackbone(model.to(device), self.mask_unseen)
        template, kwargs = self.template_and_kwargs(supervised)
        kwargs["plugins"] = [*kwargs.get("plugins", []), _finite_loss_plugin(ctx.train.epochs)]
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], ctx.train)
        built = template(
            model=backbone, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
            train_mb_size=ctx.train.batch_size, train_epochs=ctx.train.epochs, eval_mb_size=ctx.train.eval_batch_size,
            device=device, evaluator=EvaluationPlugin(loggers=[]), eval_every=-1, **kwargs,
        )
        _current_buffer_api(built)
        if hasattr(built, "ace_criterion"):  # ER-ACE
            built.ace_criterion = StableACE()
        return built

    def template_and_kwargs(self, supervised: Any) -> tuple[Any, dict[str, Any]]:
        return getattr(supervised, self.template_name), self.template_kwargs()


def _current_buffer_api(template: Any) -> None:
    """Avalanche 0.6's Replay, DER and ER-ACE update their buffers through the buffer's deprecated `update(strategy)`,
    which warns after every experience and, worse, sets the process's filter for every DeprecationWarning to
    "once" (so other libraries' deprecations start to print). Their calls go to what `update` itself does,
    `post_adapt(strategy, strategy.experience)`, for buffers that inherit that `update` unchanged."""
    from avalanche.training.storage_policy import ExemplarsBuffer

    for owner in (template, *template.plugins):
        policy = getattr(owner, "storage_policy", None)
        if isinstance(policy, ExemplarsBuffer) and type(policy).update is ExemplarsBuffer.update:
            policy.update = lambda strategy, _policy=policy, **_: _policy.post_adapt(strategy, strategy.experience)


def _finite_loss_plugin(n_epochs: int) -> Any:
    """Stop Avalanche's loop after an epoch whose loss was NaN or infinite (as `StopOnNonFiniteLoss` does for
    Lightning fits), so the broken weights never reach a checkpoint."""
    from avalanche.core import SupervisedPlugin

    class StopOnNonFiniteLoss(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.finite: torch.Tensor | None = None

        def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
            self.finite = None

        def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            ok = torch.isfinite(strategy.loss.detach()).all()
            self.finite = ok if self.finite is None else self.finite & ok

        def after_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
            if self.finite is not None and not bool(self.finite):
                raise TrainingError(
                    f"training: the loss became NaN or infinite in experience {strategy.experience.current_experience + 1}, "
                    f"epoch {strategy.clock.train_exp_epochs}/{n_epochs}; stopped (a smaller train.lr may help)")

    return StopOnNonFiniteLoss()


def _baseline(name: str, template: str, params: type | None, doc: str, memory: str | None = None,
              per_experience: bool = False, mask_unseen: bool = True) -> type:
    """Register an Avalanche template under `name`, with its hyperparameters as a typed params dataclass.
    `memory` names the parameter that sizes its buffer of past samples."""

    def memory_text(self: AvalancheBaseline) -> str:
        if memory is None:
            return "none"
        return f"{getattr(self.params, memory)}{' per experience' if per_experience else ''}"

    cls = type(f"Avalanche{template}", (AvalancheBaseline,), {
        "__doc__": doc, "template_name": template, "memory": property(memory_text), "mask_unseen": mask_unseen,
        "buffer_param": memory, "per_experience": per_experience,
    })
    return STRATEGIES.register(name, params=params)(cls)


@dataclass
class EWCParams:
    ewc_lambda: float = 100.0  # weight of the quadratic penalty on important weights
    mode: str = "separate"  # separate: one penalty per past experience; online: one running importance


@dataclass
class SIParams:
    si_lambda: float = 1.0  # weight of the path-integral penalty


@dataclass
class LwFParams:
    alpha: float = 1.0  # weight of the distillation loss on the previous model's outputs
    temperature: float = 2.0  # softmax temperature of the distillation


@dataclass
class ReplayParams:
    mem_size: int = 200  # samples kept in the replay buffer (class-balanced)


@dataclass
class GEMParams:
    patterns_per_exp: int = 40  # samples kept from each experience
    memory_strength: float = 0.5  # offset added to the projected gradient's constraint (GEM's gamma)


@dataclass
class AGEMParams:
    patterns_per_exp: int = 40  # samples kept from each experience
    sample_size: int = 64  # buffered samples drawn per step to compute the reference gradient


@dataclass
class DERParams:
    mem_size: int = 200  # samples kept in the replay buffer (class-balanced)
    batch_size_mem: int = 32  # buffered samples replayed per training batch
    alpha: float = 0.1  # DER: weight of the logit-matching loss on buffered samples
    beta: float = 0.5  # DER++: weight of the label loss on buffered samples


@dataclass
class ERACEParams:
    mem_size: int = 200  # samples kept in the replay buffer (class-balanced)
    batch_size_mem: int = 32  # buffered samples replayed per training batch


class StableACE:
    """ER-ACE's asymmetric cross-entropy: the incoming batch is scored over its own classes only, the buffer
    over all. Avalanche 0.6's ACECriterion takes log(softmax(x)), which is -inf for a class whose probability
    underflows (a logit gap beyond ~88 in float32), and its one-hot product then gives 0 * -inf = NaN: ER-ACE
    stopped with a NaN loss at every lr on a domain-incremental stream. The same loss with log_softmax."""

    def __call__(self, out_in: torch.Tensor, target_in: torch.Tensor, out_buffer: torch.Tensor,
                 target_buffer: torch.Tensor) -> torch.Tensor:
        current = torch.unique(target_in)  # sorted
        loss_current = nn.functional.cross_entropy(out_in[:, current], torch.searchsorted(current, target_in))
        return (nn.functional.cross_entropy(out_buffer, target_buffer) + loss_current) / 2


def _cpu_safe_si_plugin(si_lambda: float) -> Any:
    """Avalanche 0.6's SynapticIntelligencePlugin stores parameter snapshots as `param.detach().cpu().flatten()`,
    which on CPU is a view of the live parameter: old and new weights are then the same tensor, every path
    integral is 0 and SI does nothing (measured: the same weights as Naive at si_lambda=1e9). This subclass
    copies the snapshots after each of the plugin's own hooks, which is all the fix needs."""
    from avalanche.training.plugins import SynapticIntelligencePlugin

    class CPUSafeSIPlugin(SynapticIntelligencePlugin):
        def _detach_copies(self, table: dict) -> None:
            for entry in table.values():
                entry.data = entry.data.clone()

        def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
            super().before_training_exp(strategy, **kwargs)
            self._detach_copies(self.ewc_data[0])  # weights at the start of the experience

        def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            super().before_training_iteration(strategy, **kwargs)
            self._detach_copies(self.syn_data["old_theta"])  # weights before this step

    return CPUSafeSIPlugin(si_lambda=si_lambda)


class _SI(AvalancheBaseline):
    """Synaptic Intelligence (Zenke et al. 2017): Avalanche's plugin, with its CPU snapshot bug fixed."""

    template_name = "Naive"

    def template_and_kwargs(self, supervised: Any) -> tuple[Any, dict[str, Any]]:
        return supervised.Naive, {"plugins": [_cpu_safe_si_plugin(self.params.si_lambda)]}


_baseline("avl_naive", "Naive", None, "Avalanche's Naive fine-tuning loop on the same model, beside the native `naive`.")
_baseline("ewc", "EWC", EWCParams, "Elastic Weight Consolidation (Kirkpatrick et al. 2017), Avalanche's implementation.")
STRATEGIES.register("si", params=SIParams)(_SI)
_baseline("lwf", "LwF", LwFParams, "Learning without Forgetting (Li & Hoiem 2017), Avalanche's implementation.")
_baseline("replay", "Replay", ReplayParams, "Experience replay with a fixed class-balanced buffer (Avalanche).", memory="mem_size")
_baseline("gem", "GEM", GEMParams, "Gradient Episodic Memory (Lopez-Paz & Ranzato 2017), Avalanche's implementation.",
          memory="patterns_per_exp", per_experience=True)
_baseline("agem", "AGEM", AGEMParams, "Averaged GEM (Chaudhry et al. 2019), Avalanche's implementation.",
          memory="patterns_per_exp", per_experience=True)
_baseline("der", "DER", DERParams, "Dark Experience Replay++ (Buzzega et al. 2020), Avalanche's implementation.", memory="mem_size",
          mask_unseen=False)
_baseline("er_ace", "ER_ACE", ERACEParams, "ER with asymmetric cross-entropy (Caccia et al. 2022), Avalanche's implementation.",
          memory="mem_size")
