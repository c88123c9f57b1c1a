"""What the evaluator measures of the MoE beyond accuracy: where each test experience's samples are
routed (routing mass per modality and expert, routing accuracy), what expert communication did, and
what the class statistics hold.
Each probe keeps its own sums for one evaluation; nothing is stored on the model.

Shape key: J test experiences, M modalities, E routed experts, B samples, n present tokens."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from lifelong_moe.models.probe import Reduce
from lifelong_moe.moe.communication import COMMUNICATION, Stats, add_stats


class RoutingProbe:
    """Gate mass per (test experience, modality, expert), and routing accuracy: the share of experience
    j's test samples whose top expert (gate mass over layers and tokens) belongs to j's own group."""

    def start(self, model: Any, n_loaders: int) -> None:
        E, M = max(len(model.expert_owner), 1), max(len(model.encoders), 1)
        self.mass = torch.zeros(n_loaders, M, E, device=model.device)  # (J, M, E)
        self.hits = torch.zeros(n_loaders, 2, device=model.device)  # (J, [correct, total])

    def update(self, model: Any, prediction: Any, batch: Any, loader: int) -> None:
        out, y = prediction.details, batch[1]
        if not model.expert_owner:
            return
        per_sample = torch.zeros(len(y), len(model.expert_owner), device=model.device)  # (B, E)
        for routing in out.routings:
            k = routing.topk_idx.shape[1]
            w = routing.topk_weight.float()
            if out.token_present is not None:  # tokens of absent modalities carry no mass
                w = w * out.token_present.unsqueeze(1)
            w = w.reshape(-1)
            idx = routing.topk_idx.reshape(-1)
            mod = out.token_modality.repeat_interleave(k)
            self.mass[loader].index_put_((mod, idx), w / len(out.routings), accumulate=True)
            per_sample.index_put_((out.token_sample.repeat_interleave(k), idx), w, accumulate=True)
        own_group = model.experience_group.get(loader, -1)
        owner = torch.as_tensor(model.expert_owner, device=model.device)
        hits = (owner[per_sample.argmax(1)] == own_group).sum()
        self.hits[loader] += torch.stack([hits.float(), torch.tensor(float(len(y)), device=model.device)])

    def compute(self, model: Any, reduce: Reduce) -> dict[str, Any]:
        mass, hits = reduce(self.mass), reduce(self.hits)
        return {
            "routing_accuracy": (hits[:, 0] / hits[:, 1].clamp_min(1)).tolist(),
            "routing_mass": mass.tolist(),  # [test experience][modality][expert]: gate mass
            "modalities": list(model.encoders),
            "expert_owner": model.expert_owner,
            "experience_group": {int(k): v for k, v in model.experience_group.items()},
        }


class CommunicationProbe:
    """Sums of what each layer's communication reported, per test experience, turned into the mode's report."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def start(self, model: Any, n_loaders: int) -> None:
        self.stats: list[list[Stats]] = [[{} for _ in range(n_loaders)] for _ in model.layers]

    def update(self, model: Any, prediction: Any, batch: Any, loader: int) -> None:
        for layer, stats in enumerate(prediction.details.comm_stats):
            self.stats[layer][loader] = add_stats(self.stats[layer][loader], {k: v.detach() for k, v in stats.items()})

    def compute(self, model: Any, reduce: Reduce) -> dict[str, Any]:
        stats = [[{k: v.cpu() for k, v in s.items()} for s in per_layer] for per_layer in self.stats]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # ranks may hold different keys (a rank may see no token of some group): gather, then add
            everyone: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, stats)
            stats = [[_sum([rank[layer][j] for rank in everyone]) for j in range(len(stats[layer]))] for layer in range(len(stats))]
        report = COMMUNICATION.get(self.mode).report(model.layers, stats)
        return {"communication": {"mode": self.mode, **report}}


class StatisticsProbe:
    """What the class statistics hold (bytes; no samples) and what validation chose, per experience."""

    def start(self, model: Any, n_loaders: int) -> None:
        pass

    def update(self, model: Any, prediction: Any, batch: Any, loader: int) -> None:
        pass

    def compute(self, model: Any, reduce: Reduce) -> dict[str, Any]:
        stats = model.statistics
        return {"statistics": {"bytes": stats.nbytes, "rows": stats.n_rows,
                               "chosen_per_experience": {int(k): v for k, v in model.choices.items()}}}


def _sum(parts: list[Stats]) -> Stats:
    total: Stats = {}
    for part in parts:
        total = add_stats(total, part)
    return total
