"""Every extension point is one registration made from outside the package (here, in the test file):
a data source, an encoder for a new modality kind, a model, a native strategy with its own loss term and
callback, a communication mode that reports statistics, and a growth policy. Each runs through the CLI
or `run()` without any edit of the core."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from conftest import tiny_config, write_yaml
from lifelong_moe import ContinualModule, config_from_dict, run
from lifelong_moe.cli import main
from lifelong_moe.models.encoders import ENCODERS
from lifelong_moe.moe import COMMUNICATION, GROWTH, CommunicationMode
from lifelong_moe.registry import MODELS, STRATEGIES
from lifelong_moe.strategies import LightningStrategy
from scenarios import SOURCES, ModalitySpec, SourceData, Split


@pytest.fixture
def registered():
    """Registers through the callable it returns, and removes every entry afterwards."""
    made: list[tuple[Any, str]] = []

    def register(registry: Any, name: str, obj: Any, **kwargs: Any) -> Any:
        registry.register(name, **kwargs)(obj)
        made.append((registry, name))
        return obj

    yield register
    for registry, name in made:
        registry.unregister(name)


# ---- a data source with a modality of a new kind, and that kind's encoder ----------------------------
@dataclass
class SpectrumParams:
    n_classes: int = 4
    n_per_class: int = 30


def spectrum_source(params: SpectrumParams, seed: int) -> SourceData:
    """Two-channel 'spectra' whose peak position encodes the class."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        y = np.repeat(np.arange(params.n_classes), n)
        x = rng.normal(0, 0.3, (len(y), 2, 12)).astype(np.float32)
        x[np.arange(len(y)), :, 2 + 2 * y] += 3.0
        return Split({"spec": x}, y)

    return SourceData(split(params.n_per_class), split(10), {"spec": ModalitySpec("spectrum", (2, 12))})


class SpectrumFeatures(nn.Module):
    """A fixed feature map for the `spectrum` kind: the per-bin energy summed over channels."""

    out_dim = 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SpectrumEncoder.viewed += 1
        return x.float().pow(2).sum(1)


class SpectrumEncoder(nn.Module):
    """Encoder for the `spectrum` kind; its fixed feature map (for class statistics) is `SpectrumFeatures`."""

    built = 0
    viewed = 0

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        SpectrumEncoder.built += 1
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 12, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def fixed_features(spec: ModalitySpec, width: int, seed: int) -> nn.Module:
        return SpectrumFeatures()


def spectrum_config(root: Any, **overrides: Any) -> dict[str, Any]:
    cfg = tiny_config(root, **overrides)
    cfg["stream"] = {"scenario": "class_incremental", "sources": {"s": {"kind": "ext_spectrum", "params": {"n_per_class": 30}}},
                     "split": {"source": "s", "n_experiences": 2}}
    return cfg


def test_a_source_and_an_encoder_for_a_new_modality_kind(tmp_path, registered, capsys):
    registered(SOURCES, "ext_spectrum", spectrum_source, params=SpectrumParams)
    registered(ENCODERS, "spectrum", SpectrumEncoder)
    SpectrumEncoder.built = SpectrumEncoder.viewed = 0
    cfg = spectrum_config(tmp_path / "runs", model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32}})
    assert main(["run", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 0  # through the CLI
    results = json.loads((tmp_path / "runs" / "tiny" / "version_0" / "results.json").read_text())
    assert SpectrumEncoder.built >= 1 and SpectrumEncoder.viewed > 0  # the MoE's statistics read the kind's own map
    assert np.mean(results["accuracy_matrix"][-1]) > 0.8  # peaks are easy: both experiences are kept apart
    capsys.readouterr()
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "ext_spectrum" in listed and "spectrum" in listed


def test_an_unregistered_modality_kind_is_named(tmp_path, registered, capsys):
    registered(SOURCES, "ext_spectrum", spectrum_source, params=SpectrumParams)
    cfg = spectrum_config(tmp_path / "runs")
    assert main(["run", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 2
    err = capsys.readouterr().err.strip()
    assert "modality 'spec' has kind 'spectrum', for which no encoder is registered" in err and "\n" not in err


# ---- a model ----------------------------------------------------------------------------------------
@dataclass
class CentroidParams:
    embed_dim: int = 16


class CentroidModel(ContinualModule):
    """Fused modality embedding, then one linear score per class."""

    def __init__(self, params: CentroidParams, **kwargs: Any) -> None:
        super().__init__(embed_dim=params.embed_dim, **kwargs)
        self.scores = nn.Linear(params.embed_dim, self.n_classes)

    def logits(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.scores(self.fuse(inputs))


def test_a_model_runs_alone_and_in_compare(tmp_path, registered):
    registered(MODELS, "ext_centroid", CentroidModel, params=CentroidParams)
    res = run(config_from_dict(tiny_config(tmp_path, model={"name": "ext_centroid", "params": {"embed_dim": 8}})), progress=lambda s: None)
    assert res.accuracy_matrix[0, 0] > 0.9 and res.results["model"] == "ext_centroid"
    cfg_path = write_yaml(tmp_path / "c.yaml", tiny_config(tmp_path / "cmp"))
    assert main(["compare", str(cfg_path), "--strategies", "ext_centroid,naive", "--seeds", "1"]) == 0
    table = (tmp_path / "cmp" / "tiny-compare" / "version_0" / "comparison.md").read_text()
    assert "| ext_centroid | ext_centroid |" in table and "| naive | multimodal_mlp |" in table


# ---- a native strategy with its own loss term and callback -------------------------------------------
@dataclass
class ShrinkParams:
    weight: float = 10.0


class EpochCounter(Callback):
    epochs = 0

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        EpochCounter.epochs += 1


class Shrink(LightningStrategy):
    """Fine-tuning plus an L2 pull of every trainable weight towards zero."""

    def loss_terms(self, model: Any, experiences: Any, index: int) -> list[Any]:
        weight = self.params.weight
        return [lambda m, x, y, logits: weight * sum(p.pow(2).sum() for p in m.parameters() if p.requires_grad)]

    def callbacks(self, model: Any, experiences: Any, index: int) -> list[Callback]:
        return [EpochCounter()]


def _weight_norm(result: Any) -> float:
    import lightning  # noqa: F401  (the checkpoint holds plain tensors)

    state = torch.load(result.run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    return float(sum(v.float().pow(2).sum() for k, v in state.items() if k.endswith("weight")))


def test_a_strategy_adds_a_loss_term_and_a_callback(tmp_path, registered):
    registered(STRATEGIES, "ext_shrink", Shrink, params=ShrinkParams, current_experience_only=True)
    EpochCounter.epochs = 0
    shrunk = run(config_from_dict(tiny_config(tmp_path, strategy={"name": "ext_shrink", "params": {"weight": 1.0}})), progress=lambda s: None)
    assert EpochCounter.epochs == 2 * 3  # 2 experiences x 3 epochs
    plain = run(config_from_dict(tiny_config(tmp_path)), progress=lambda s: None)
    assert _weight_norm(shrunk) < 0.5 * _weight_norm(plain)  # the term reached the optimiser
    # it declared that it trains on the current experience alone, so the MoE accepts it too
    moe = tiny_config(tmp_path, strategy={"name": "ext_shrink"}, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32}})
    assert run(config_from_dict(moe), progress=lambda s: None).results["strategy"] == "ext_shrink"


# ---- a communication mode that reports statistics -------------------------------------------------
class MeanMix(nn.Module):
    """Adds a learned scale times the older groups' mean output; reports how large that addition was."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, slots: torch.Tensor, weights: torch.Tensor, older: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        combined = (slots * weights.unsqueeze(-1)).sum(1)
        if older is None:
            return combined, {"tokens": combined.new_tensor(float(len(combined)))}
        extra = self.scale * older
        return combined + extra, {"tokens": combined.new_tensor(float(len(combined))), "mix_norm": extra.detach().norm(dim=1).sum()}


def mean_mix_report(layers: Any, stats: list[list[dict]]) -> dict[str, Any]:
    per_exp = [sum(float(layer[j].get("mix_norm", 0.0)) for layer in stats) / max(sum(float(layer[j].get("tokens", 0.0)) for layer in stats), 1.0)
               for j in range(len(stats[0]))]
    return {"mix_norm": per_exp, "scalars": {f"mix_norm/exp{j:02d}": v for j, v in enumerate(per_exp)}}


def test_a_communication_mode_trains_and_reports(tmp_path, registered):
    registered(COMMUNICATION, "ext_meanmix", CommunicationMode(MeanMix, mean_mix_report))
    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, "communication": "ext_meanmix"}})
    res = run(config_from_dict(cfg), progress=lambda s: None)
    report = json.loads((res.run_dir / "results.json").read_text())["evaluations"][-1]["communication"]
    assert report["mode"] == "ext_meanmix" and len(report["mix_norm"]) == 2
    assert report["mix_norm"][1] > 0  # the second group learned to read the first
    acc = EventAccumulator(str(res.run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    assert "communication/mix_norm/exp01" in acc.Tags()["scalars"]


# ---- a growth policy ------------------------------------------------------------------------------
def test_a_growth_policy_decides_the_groups(tmp_path, registered):
    registered(GROWTH, "ext_second_only", lambda s: (s.n_groups == 1, "grow only at the second experience"))
    stream = {"scenario": "class_incremental", "sources": {"s": {"kind": "synthetic", "params": {
        "n_classes": 6, "n_modalities": 2, "dim": 8, "n_train_per_class": 30, "n_test_per_class": 10, "separation": 3.0}}},
        "split": {"source": "s", "n_experiences": 3}}
    cfg = tiny_config(tmp_path, model={"name": "moe", "params": {"embed_dim": 16, "expert_hidden": 32, "growth": "ext_second_only"}})
    cfg["stream"] = stream
    res = run(config_from_dict(cfg), progress=lambda s: None)
    per_exp = res.results["parameters_per_experience"]
    groups = [p["group"] for p in per_exp]
    # grew at the first (always) and second experience, then reused the group the new data is routed to most
    assert groups[:2] == [0, 1] and groups[2] in (0, 1) and f"reusing group {groups[2]}" in per_exp[2]["growth"]
    assert [p["routed_experts_per_layer"] for p in res.results["parameters_per_experience"]] == [2, 4, 4]
