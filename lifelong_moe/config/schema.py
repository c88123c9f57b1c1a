"""Typed schema of an experiment config. `OmegaConf.structured` checks keys and types at load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scenarios.config import StreamConfig


@dataclass
class ComponentConfig:
    """A registered component chosen by name, with the params its own schema defines."""

    name: str = "???"  # the registered name (`lifelong-moe list`)
    params: dict[str, Any] = field(default_factory=dict)  # the component's own settings, checked against its params dataclass


@dataclass
class TrainConfig:
    epochs: int = 5  # passes over each experience's training data
    batch_size: int = 64  # training batch (the global batch under DDP)
    eval_batch_size: int = 512  # batch of the evaluations
    lr: float = 1e-3  # learning rate
    weight_decay: float = 0.0  # the optimizer's weight decay
    optimizer: str = "adam"  # adam | adamw | sgd
    num_workers: int = 0  # DataLoader worker processes
    modality_dropout: float = 0.0  # remedy for modality imbalance: each present modality of a training
    # sample is masked out with this probability (a sample keeps at least one)
    shift_augment: float = 0.0  # training images and signals shifted at random by up to this share of each
    # spatial or time axis (zero fill), for every method alike (scenarios/augment.py)
    validation_fraction: float = 0.1  # share of each experience's training samples held out (stratified,
    # seeded) to choose hyperparameters on; never the test data


@dataclass
class TrainerConfig:
    """Settings passed to every `lightning.Trainer` of the run."""

    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps | tpu, as Lightning takes it
    devices: str = "auto"  # "auto", a count such as "2", or a list such as "[0,1]"
    strategy: str = "auto"  # Lightning's strategy: auto, ddp, ...
    num_nodes: int = 1  # machines taking part (DDP)
    precision: str = "32-true"  # Lightning's precision: 32-true, 16-mixed or bf16-mixed (aliases 32, 16, bf16)
    deterministic: bool = True  # deterministic kernels where they exist (warn-only where one is missing)
    enable_progress_bar: bool = True  # Lightning's bar, drawn only when the output is a terminal
    log_every_n_steps: int = 10  # training-loss points logged to TensorBoard every this many steps
    cpu_threads: int = 0  # torch intra-op threads on CPU; 0: torch's default (one per core)


@dataclass
class OutputConfig:
    root: str = "runs"  # runs go to root/<name>/<version>/
    version: str | None = None  # None: the next free `version_N`
    plots: bool = True  # write the PNG figures beside results.json


@dataclass
class ModalityEvalConfig:
    """Robustness to missing modalities, evaluated on every test experience with the evaluator of R."""

    subsets: bool = True  # accuracy with only each non-empty subset of modalities, after the last experience
    single_each_experience: bool = True  # accuracy of each modality alone after every experience (imbalance)
    missing_rates: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75])  # each modality dropped at this rate


@dataclass
class EncoderConfig:
    """A frozen pretrained encoder for one modality, under `pretrained.<modality>`. Its features replace
    that modality's raw arrays in every source before the stream is built (the modality becomes a
    `tabular` feature vector on which the trainable model sits), and are cached on disk."""

    kind: str = "???"  # timm | torchvision | hf (`lifelong-moe list`)
    name: str = ""  # timm model name or torchvision builder name; hf reads the architecture from config.json
    weights: str = "???"  # a local file (timm, torchvision) or save_pretrained folder (hf); never downloaded
    params: dict[str, Any] = field(default_factory=dict)  # kind-specific, checked at load
    batch_size: int = 64  # samples encoded at once
    device: str = "auto"  # auto (cuda if present) | cpu | cuda | cuda:1 ...
    cache: bool = True  # keep the features on disk, keyed by data, preprocessing, encoder and weights


@dataclass
class ExperimentConfig:
    name: str = "default"  # the experiment's name: its runs go to output.root/<name>/
    seed: int = 0  # seeds torch, numpy and Python; the data's splits and draws follow it too
    stream: StreamConfig = field(default_factory=StreamConfig)  # the task stream: sources and experiences
    model: ComponentConfig = field(default_factory=lambda: ComponentConfig(name="multimodal_mlp"))  # the model (`lifelong-moe list models`)
    strategy: ComponentConfig = field(default_factory=lambda: ComponentConfig(name="naive"))  # how each experience is trained (`lifelong-moe list strategies`)
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation settings
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # Lightning Trainer settings
    output: OutputConfig = field(default_factory=OutputConfig)  # where results go
    modality_eval: ModalityEvalConfig = field(default_factory=ModalityEvalConfig)  # missing-modality evaluations
    evaluate_untrained: bool = True  # accuracy of the untrained model, needed for FWT
    reference_results: str | None = None  # results.json of a joint (cumulative) run, for intransigence
    pretrained: dict[str, EncoderConfig] = field(default_factory=dict)  # modality -> frozen pretrained encoder
    imports: list[str] = field(default_factory=list)  # your modules that register components (e.g. my_pkg.models),
    # imported before any name in the config is looked up; the config's folder and the working directory are searched first
