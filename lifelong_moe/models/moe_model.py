"""The lifelong MoE model (`model.name: moe`): modality tokens flow through MoE layers whose experts grow
in groups, one group per experience (or per new modality), and freeze afterwards. Without task labels,
an experience gate (class statistics in fixed feature spaces, `gates.py`) says which experience a sample
comes from; the sample runs through that experience's group of experts, and the prediction is

    p(c | x)    = sum_e p(e | x) p(c | x, e)
    p(c | x, e) = (1 - w_e) p_stat(c | x, e) + w_e p_experts(c | x, e)    for the routed experience (argmax p(e | x))
    p(c | x, e) = p_stat(c | x, e)                                          for every other experience

where p_experts is the routed group's head over e's classes and w_e, the weight of the experts against the
statistics, is chosen on validation data. Training experience e routes every sample to e's experts and
fits e's head on e's classes only. Each evaluation also reports the two parts alone (`parts`): the
statistics (w = 0) and the experts within the routed experience, so every run shows what the experts add.

With `gate: nested` the gate's statistics also live in each group's own learned features
(`statistics/nested.py`). Settings (`moe_params.py`), growth (`moe/growth.py`), freezing (`freezing.py`),
communication (`moe/communication.py`), the shared experts' anchor (`moe/shared_anchor.py`) and per-group
encoders (`group_encoders.py`) are their own parts.
Shape key: B samples, n present tokens, D width, E routed experts, K head columns, C classes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong_moe.config.schema import TrainConfig
from lifelong_moe.errors import ConfigError
from lifelong_moe.models.continual_module import ContinualModule, Prediction
from lifelong_moe.models.freezing import freeze_old
from lifelong_moe.models.gates import StatisticsGate, TaskLabelGate
from lifelong_moe.models.group_encoders import GroupEncoders
from lifelong_moe.models.moe_params import MoEParams, check_moe_params
from lifelong_moe.models.moe_probes import CommunicationProbe, RoutingProbe, StatisticsProbe
from lifelong_moe.models.moe_routing import ExperienceTables, HeadStacks, Tokens, routed_prediction, token_layout
from lifelong_moe.models.self_labels import SelfLabelHeads, carries_transform, check_modality, plain_and_transformed
from lifelong_moe.models.stats_model import ModalityStatistics
from lifelong_moe.moe import COMMUNICATION, MoELayer, decide_growth
from lifelong_moe.moe.cached import derived
from lifelong_moe.moe.groups import GroupRoute
from lifelong_moe.moe.segments import NEG
from lifelong_moe.moe.shared_anchor import SharedAnchor
from lifelong_moe.registry import MODELS
from lifelong_moe.statistics.nested import NestedStatistics
from scenarios import Experience
from scenarios.modality import ModalitySpec


class ExperienceHead(nn.Module):
    """Linear head over the classes one experience introduced."""

    def __init__(self, dim: int, classes: list[int]) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, len(classes))
        self.register_buffer("classes", torch.as_tensor(classes, dtype=torch.long))


@dataclass
class MoEForward:
    logits: torch.Tensor  # (B, C) log p(c | x)
    aux_loss: torch.Tensor  # scalar: weighted balance + z losses over layers
    token_sample: torch.Tensor  # (n,) sample of each token
    token_modality: torch.Tensor  # (n,) modality index (order of self.encoders)
    routings: list[Any]  # per layer: Routing
    comm_stats: list[dict] = field(default_factory=list)  # per layer: what communication did
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, C) log-scores of each part alone
    routed: torch.Tensor | None = None  # (B,) the routed experience of each sample
    token_present: torch.Tensor | None = None  # (n,) bool: the token's modality is present (absent ones count for nothing)
    pooled: torch.Tensor | None = None  # (B, D) the routed group's representation of each sample


class MoEModel(ContinualModule):
    part_names = ("statistics", "experts")

    def __init__(self, params: MoEParams, *, n_classes: int, scenario: str, train: TrainConfig) -> None:
        check_moe_params(params)
        super().__init__(n_classes=n_classes, scenario=scenario, train=train, embed_dim=params.embed_dim)
        self.settings = params
        mode = COMMUNICATION.get(params.communication, "model.params.communication")
        n_shared = params.shared.n if mode.anchors_shared_experts else 0
        self.layers = nn.ModuleList(
            MoELayer(params.embed_dim, params.expert_hidden, params.k, n_shared=n_shared, communication=params.communication)
            for _ in range(params.n_layers))
        self.shared_anchor = SharedAnchor(self.layers, params.shared.drift_bound) if n_shared else None
        self.final_norm = nn.LayerNorm(params.embed_dim)
        self.heads = nn.ModuleDict()
        self.self_label_heads = SelfLabelHeads()  # training only (self_labels.py)
        self.group_encoders = GroupEncoders()
        self._statistics = ModalityStatistics(params.statistics)
        self.statistics = self._statistics.classifier
        self.nested = NestedStatistics(params.embed_dim * (params.n_layers + 1), params.statistics.shrinkages) if params.gate == "nested" else None
        if self.nested is not None:
            self.part_names = (*self.part_names, "fixed_statistics")
        self.register_buffer("weight_correct", torch.zeros(len(params.expert_weights), dtype=torch.float64))
        self.register_buffer("frozen_weight", torch.zeros(0))  # conditional frozen: each experience's w
        self.experience_group: dict[int, int] = {}
        self.experience_task: dict[int, int] = {}
        self.growth_log: dict[int, str] = {}
        self.choices: dict[int, dict[str, float]] = {}  # per experience: what validation chose
        self._trained: set[str] = set()  # names of parameters that lived through a finished experience (a deepcopy keeps them)
        self._tables: ExperienceTables | None = None  # rebuilt when an experience is added or the model moves
        self._head_stacks = HeadStacks()

    # ---- structure ------------------------------------------------------------------------------
    @property
    def n_groups(self) -> int:
        return len(set(self.experience_group.values()))

    @property
    def expert_owner(self) -> list[int]:
        return list(self.layers[0].pool.owner)

    def tables(self) -> ExperienceTables:
        """Index tables of the experiences grown so far, on the model's device (`moe_routing.py`)."""
        t = self._tables
        if t is None or len(t.experiences) != len(self.heads) or t.experience.device != self.device:
            t = self._tables = ExperienceTables.of(self.heads, self.experience_group, self.device)
        return t

    def add_modality(self, name: str, spec: ModalitySpec) -> None:
        if self.settings.self_labels != "none" and carries_transform(spec.dtype, spec.shape):
            why = check_modality(self.settings.self_labels, name, tuple(spec.shape))
            if why:
                raise ConfigError(f"model.params.self_labels: {why}")
        super().add_modality(name, spec)
        self._statistics.add_modality(name, spec)
        if self.settings.encoder_training == "never":
            self.encoders[name].requires_grad_(False)
            self.modality_embed[name].requires_grad_(False)

    def on_experience_start(self, exp: Experience) -> None:
        e = exp.index
        old = [p for n, p in self.named_parameters() if n in self._trained]
        known = list(self.encoders)
        self._statistics.settle_width(exp.spec.n_train)
        super().on_experience_start(exp)  # encoders for new modalities, class masks
        if self.settings.self_labels != "none" and not any(carries_transform(s.dtype, s.shape) for s in exp.modality_specs.values()):
            raise ConfigError(f"model.params.self_labels: '{self.settings.self_labels}' needs an image or signal modality; "
                              f"experience {e} has {sorted(exp.modality_specs)}")
        self.experience_task[e] = int(exp.task_label)
        decision = decide_growth(
            self.settings.growth, n_groups=self.n_groups, n_experts=self.layers[0].n_experts,
            experts_per_growth=self.settings.experts_per_growth, max_experts=self.settings.max_experts,
            new_modality=any(m not in known for m in exp.modality_specs), closest_group=lambda: self._most_routed_group(exp))
        group = self.n_groups if decision.grow else int(decision.reuse_group)
        if decision.grow:
            for layer in self.layers:
                layer.grow(self.settings.experts_per_growth, group)
            if self.nested is not None:
                self.nested.add_stage()
            if self.settings.encoder_training == "per_group" and group > 0:
                self.group_encoders.grow(group, self.group_encoders.of(self.experience_group[e - 1], self.encoders), known)
        self.experience_group[e], self.growth_log[e] = group, decision.reason
        self.heads[str(e)] = ExperienceHead(self.settings.embed_dim, exp.classes).to(self.device)
        if self.settings.self_labels != "none":
            self.self_label_heads.add(e, self.settings.embed_dim, len(exp.classes), self.settings.self_labels)
            self.self_label_heads.to(self.device)
        self._tables = None
        self.statistics.add_rows(e, exp.classes)
        if self.nested is not None:
            self.nested.add_rows(group, len(exp.classes))
        if self.statistics.frozen:  # this experience's w until it ends: the current choice
            self.frozen_weight = torch.cat([self.frozen_weight, self.frozen_weight.new_full((1,), self.expert_weight)])
        shared = {id(p) for p in self.shared_anchor.parameters_held} if self.shared_anchor is not None else set()
        encoders = {id(p) for p in [*self.encoders.parameters(), *self.modality_embed.parameters()]}
        freeze_old(old, encoders=encoders, shared=shared, encoder_training=self.settings.encoder_training,
                   freeze=self.settings.freeze_old)

    @torch.no_grad()
    def _most_routed_group(self, exp: Experience) -> int:
        """The group the gate sends most of the new experience's samples to (up to 512; ties to the lowest)."""
        counts = torch.zeros(self.n_groups, dtype=torch.long)
        exps = sorted(int(e) for e in self.heads)
        for x, present, _ in self.batches(exp.validation if exp.validation is not None else exp.dataset):
            routed = StatisticsGate(self.statistics).log_posterior(self.statistics.featurize(x, present), None, exps).argmax(1)
            counts += torch.bincount(torch.as_tensor([self.experience_group[exps[c]] for c in routed.tolist()]), minlength=self.n_groups)
            if counts.sum() >= 512:
                break
        return int(counts.argmax())

    def on_experience_end(self, exp: Experience) -> None:
        """Freeze-point bookkeeping, then the experience's class statistics and the validated w."""
        self._trained = {n for n, _ in self.named_parameters()}
        if self.shared_anchor is not None:
            self.shared_anchor.set()
        if self.rehearsing:  # the featurisation is rehearsed by forward passes
            return
        was_training = self.training
        self.eval()
        validation = list(self.batches(exp.validation)) if exp.validation is not None else None
        learned = self._learn_nested(exp, validation) if self.nested is not None else {}
        self.choices[exp.index] = self.statistics.learn(exp.index, self.batches(exp.dataset), validation, self._choose_weight)
        self.choices[exp.index].update({**learned, "expert_weight": self.expert_weight})
        if self.statistics.frozen:
            self.frozen_weight[exp.index] = self.expert_weight
        self.train(was_training)

    @torch.no_grad()
    def _learn_nested(self, exp: Experience, validation: list[Any] | None) -> dict[str, float]:
        """The experience's samples, through every group so far, into the nested statistics; the shrinkage
        chosen on its validation split, which then joins them too."""
        def features(batches: Any) -> Any:
            for x, present, y in batches:
                tokens, present = self.modality_tokens(x)
                yield self.group_features(x, tokens, present), self.statistics.row_of(exp.index, y)

        for feats, rows in features(self.batches(exp.dataset)):
            self.nested.observe(feats, rows)
        if validation is not None:
            val = list(features(validation))
            joined = [torch.cat([f[g] for f, _ in val]) for g in range(self.n_groups)]
            rows = torch.cat([r for _, r in val])
            self.nested.fit((joined, rows, self.statistics.row_class))
            self.nested.observe(joined, rows)
        chosen = self.nested.fit(None)
        self.nested.settle()  # packed until the next experience, as a checkpoint holds them
        return chosen

    # ---- the weight of the experts against the statistics -------------------------------------------
    @property
    def expert_weight(self) -> float:
        """The candidate with the most correct validation answers so far (ties and no evidence: the first)."""
        best = derived(self.weight_correct, "best", lambda: int(self.weight_correct.argmax()))  # no sync per forward
        return self.settings.expert_weights[best]

    def _choose_weight(self, validation: list[Any]) -> dict[str, float]:
        for k, w in enumerate(self.settings.expert_weights):
            self.weight_correct[k] += sum(float((self.forward_outputs(x, expert_weight=w, parts=False).logits.argmax(1) == y).sum())
                                          for x, _, y in validation)
        return {}

    def _weights(self, tables: ExperienceTables, candidate: float | None) -> float | torch.Tensor:
        """w for each head column (K,), or one w; `candidate` replaces the newest experience's (being scored)."""
        if not self.statistics.frozen:
            return self.expert_weight if candidate is None else candidate
        weights = self.frozen_weight[tables.experience]
        if candidate is not None:
            weights = torch.where(tables.experience == tables.experiences[-1], candidate, weights)
        return weights[tables.col]

    # ---- forward --------------------------------------------------------------------------------
    def forward_outputs(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None, current: int | None = None,
                        expert_weight: float | None = None, parts: bool = True) -> MoEForward:
        """`current`: training on that experience (every sample routed to it, its head alone scores).
        Each sample runs only its routed group's router columns, experts and head (`moe_routing.py`).
        `parts`: also score each part alone (what the evaluator reports; a plain forward does not need them)."""
        tokens, present = self.modality_tokens(inputs)
        B = len(next(iter(tokens.values())))
        tables = self.tables()
        exps = tables.experiences
        feats = self.statistics.featurize(inputs, present) if current is None else {}
        learned = None  # gate: nested, the statistics in the groups' own features
        if current is None and self.nested is not None and self.nested.n_rows:
            learned = self.nested.log_posterior(self.group_features(inputs, tokens, present))
        rows = None
        if current is not None:
            log_pe = torch.where(tables.experience == current, 0.0, NEG).expand(B, -1)
        elif self.task_incremental and task_labels is not None:
            log_pe = TaskLabelGate(self.experience_task).log_posterior(feats, task_labels, exps)
        else:
            rows = self.statistics.row_log_posterior(feats, learned)  # every row scored once, for the gate and p_stat
            log_pe = StatisticsGate(self.statistics, learned).log_posterior(feats, None, exps, rows=rows)  # (B, n_exp)
        routed = log_pe.argmax(1)  # (B,) the routed experience's column
        sample_group = tables.group_of[routed]
        single = self.experience_group[current] if current is not None else None
        pooled, aux, t, routings, comm_stats = self._experts(inputs, tokens, present, sample_group, single)
        logits, scored = self._predict(pooled, tables, log_pe, routed, feats, rows, learned, current, expert_weight, parts)
        routed_experience = tables.experience[routed] if exps else None
        return MoEForward(logits, aux, t.sample, t.modality, routings, comm_stats, scored, routed_experience, t.present, pooled)

    def _experts(self, inputs: dict[str, Any], tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                 sample_group: torch.Tensor, single: int | None = None, every_depth: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, Tokens, list[Any], list[dict]]:
        """Each sample through the experts (and per-group encoders) of its group `sample_group` (B,), or of the
        group `single` for every sample (known on the host): the pooled representation (B, D), the auxiliary
        loss, the tokens' layout, routings, communication. `every_depth`: the representation is the pooled
        tokens after the encoders and after each layer, each layer-normed, joined (B, D * (n_layers + 1))."""
        if len(self.group_encoders):
            tokens = self.group_encoders.encode(inputs, tokens, sample_group, self.modality_embed)
        # every (sample, modality) token, absent ones weighted 0; the communication modules run group by group
        # on the present tokens alone (they wait for the host anyway)
        t = token_layout(tokens, present, only_present=any(len(layer.comm) for layer in self.layers))
        if single is not None:
            route = GroupRoute(single=single)
        else:  # tokens sorted by group once here, not in every layer (pooling is by sample, in any order)
            route, order = GroupRoute.by_group(sample_group[t.sample], self.n_groups)
            t = t.reordered(order)
        weight = t.present.to(t.h.dtype)
        h, aux = t.h, t.h.new_zeros(())
        routings, comm_stats, depths = [], [], []
        for layer in self.layers:
            if every_depth:
                depths.append(F.layer_norm(_pool(h, t, weight, len(sample_group)), h.shape[1:]))
            out = layer(h, route=route, token_weight=weight)
            h = out.hidden
            aux = aux + self.settings.balance_loss_weight * out.balance_loss + self.settings.z_loss_weight * out.z_loss
            routings.append(out.routing)
            comm_stats.append(out.stats)
        pooled = self.final_norm(_pool(h, t, weight, len(sample_group)))  # (B, D)
        if every_depth:
            pooled = torch.cat([*depths, pooled], 1)
        return pooled, aux, t, routings, comm_stats

    def group_features(self, inputs: dict[str, Any], tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Every group's representation of every sample at every depth, [(B, D * (n_layers + 1))] in group order
        (`gate: nested`): the encoders' tokens and each layer's see what a group learned at different depths,
        and the earlier ones are less specific to the group's own classes (measured in docs/models.md)."""
        B = len(next(iter(tokens.values())))
        full = lambda g: torch.full((B,), g, dtype=torch.long, device=self.device)  # noqa: E731
        return [self._experts(inputs, tokens, present, full(g), single=g, every_depth=True)[0].detach()
                for g in range(self.n_groups)]

    def _predict(self, pooled: torch.Tensor, tables: ExperienceTables, log_pe: torch.Tensor, routed: torch.Tensor, feats: Any,
                 rows: torch.Tensor | None, learned: torch.Tensor | None, current: int | None, expert_weight: float | None,
                 parts: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """log p(c | x) (B, C) by the formula in the module docstring, and each part alone; the experts' part
        from the routed head alone (`moe_routing.routed_prediction`)."""
        if current is not None:  # training: the current head over its classes
            head = self.heads[str(current)]
            logits = pooled.new_full((len(pooled), self.n_classes), NEG)
            logits[:, head.classes] = torch.log_softmax(head.linear(pooled), dim=1).to(logits.dtype)  # bf16 under autocast
            return logits, {}
        if not tables.experiences:  # the untrained model
            return pooled.new_full((len(pooled), self.n_classes), NEG), {}
        order = derived(self.statistics.row_experience, "column_order",
                        lambda: torch.argsort(self.statistics.row_experience, stable=True))  # rows in head-column order
        stat = self.statistics.conditional_log_posterior(feats, learned, rows=rows)[:, order]  # (B, K) by head column
        logits, scored = routed_prediction(pooled, self._head_stacks(tables), tables, stat, log_pe, routed,
                                           self._weights(tables, expert_weight), self.n_classes, _mix, parts)
        if parts and learned is not None:  # what the fixed feature maps alone would say (the `stats` model)
            scored["fixed_statistics"] = self.statistics.class_log_posterior(feats, self.n_classes)
        return logits, scored

    def logits(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of the classes of every head; classes without a head score NEG (finite, so no NaN)."""
        return self.forward_outputs(inputs, task_labels, parts=False).logits

    def forward(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.logits(inputs, task_labels)
        return logits.masked_fill(~self.class_mask(task_labels, logits.shape[0]), NEG)

    def training_loss(self, x: dict[str, Any], y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kind, e, B = self.settings.self_labels, self.experience, len(y)
        if kind == "none":
            out = self.forward_outputs(x, t, current=e)
            loss = F.cross_entropy(out.logits, y) + out.aux_loss
        else:  # the batch and its transformed copy in one pass; the class head sees the plain copy
            joined, transforms = plain_and_transformed(kind, x)
            out = self.forward_outputs(joined, torch.cat([t, t]), current=e)
            local = (self.heads[str(e)].classes.unsqueeze(0) == y.unsqueeze(1)).int().argmax(1)
            loss = (F.cross_entropy(out.logits[:B], y) + out.aux_loss
                    + self.self_label_heads.loss(e, out.pooled, local, transforms, kind))
            out.logits = out.logits[:B]
        if self.shared_anchor is not None:
            loss = loss + self.settings.shared.anchor * self.shared_anchor.penalty()
        return loss, out.logits

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After each optimizer step: shared experts back within their drift bound (if one is set)."""
        if self.shared_anchor is not None:
            self.shared_anchor.project()

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluation_step(self, inputs: dict[str, Any], task_labels: torch.Tensor | None) -> Prediction:
        out = self.forward_outputs(inputs, task_labels)
        mask = ~self.class_mask(task_labels, out.logits.shape[0])
        return Prediction(out.logits.masked_fill(mask, NEG), out, {k: v.masked_fill(mask, NEG) for k, v in out.parts.items()})

    def evaluation_probes(self) -> list[Any]:
        return [RoutingProbe(), CommunicationProbe(self.settings.communication), StatisticsProbe()]

    # ---- accounting and checkpoints ---------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        counts = super().parameter_counts()
        n = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        k = min(self.settings.k, self.settings.experts_per_growth)
        active = n(self.encoders) + n(self.modality_embed) + n(self.final_norm) + n(self.heads)
        for layer in self.layers:
            per_expert = layer.pool.params_per_expert
            active += n(layer.norm) + n(layer.router) + n(layer.pool.shared) + min(k, len(layer.pool)) * per_expert
            if len(layer.comm):  # the newest group's module, reading every older group's experts
                newest = max(int(g) for g in layer.comm)
                active += n(layer.comm[str(newest)]) + sum(g < newest for g in layer.pool.owner) * per_expert
        return {**counts, "active_per_sample": active, "routed_experts_per_layer": len(self.expert_owner)}

    def stored_bytes(self) -> int:
        return self.statistics.nbytes + (self.nested.nbytes if self.nested is not None else 0)

    def structure_state(self) -> dict[str, Any]:
        names = dict(self.named_parameters())
        return {
            **super().structure_state(),
            "experience_group": dict(self.experience_group),
            "experience_task": dict(self.experience_task),
            "growth_log": dict(self.growth_log),
            "heads": {e: head.classes.tolist() for e, head in self.heads.items()},
            "expert_owner": self.expert_owner,
            "trained": sorted(n for n in self._trained if n in names),
            "choices": dict(self.choices),
            "statistics_width": self._statistics.width,
            "group_encoders": self.group_encoders.modalities(),
        }

    def restore_structure(self, state: dict[str, Any]) -> None:
        self._statistics.width = state["statistics_width"]
        super().restore_structure(state)
        owners = state["expert_owner"]
        for g in dict.fromkeys(owners):  # groups in order of first appearance
            for layer in self.layers:
                layer.grow(owners.count(g), g)
        if self.nested is not None:
            for _ in dict.fromkeys(owners):
                self.nested.add_stage()
        for g, modalities in state["group_encoders"].items():  # the values come with the state dict
            self.group_encoders.grow(int(g), self.encoders, modalities)
        for e, classes in state["heads"].items():
            self.heads[str(e)] = ExperienceHead(self.settings.embed_dim, classes).to(self.device)
            if self.settings.self_labels != "none":
                self.self_label_heads.add(int(e), self.settings.embed_dim, len(classes), self.settings.self_labels)
        self.self_label_heads.to(self.device)
        self._tables = None
        self.frozen_weight = self.frozen_weight.new_zeros(len(state["heads"]) if self.statistics.frozen else 0)
        self.experience_group = {int(k): v for k, v in state["experience_group"].items()}
        self.experience_task = {int(k): v for k, v in state["experience_task"].items()}
        self.growth_log = {int(k): v for k, v in state["growth_log"].items()}
        self.choices = {int(k): v for k, v in state["choices"].items()}
        self._trained = set(state["trained"])

    def structure_summary(self) -> dict[str, Any]:
        e = self.experience
        summary = {"group": self.experience_group.get(e), "growth": self.growth_log.get(e), "n_groups": self.n_groups}
        drift = self.shared_anchor.drift() if self.shared_anchor is not None else None
        return {**summary, "shared_drift": drift} if drift is not None else summary


def _pool(h: torch.Tensor, t: Tokens, weight: torch.Tensor, B: int) -> torch.Tensor:
    """The mean of each sample's present tokens (B, D)."""
    pooled = h.new_zeros(B, h.shape[1]).index_add_(0, t.sample, h * weight.unsqueeze(1))
    return pooled / t.presence.sum(1, keepdim=True).clamp_min(1).to(h.dtype)


def _mix(stat: torch.Tensor, experts: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """log((1 - w) p_stat + w p_experts), elementwise; w one value or one per column (K,)."""
    if isinstance(weight, torch.Tensor):
        return torch.logaddexp(stat + torch.log1p(-weight), experts + weight.log())  # log 0 = -inf drops a side
    if weight <= 0:
        return stat
    return experts if weight >= 1 else torch.logaddexp(stat + math.log(1 - weight), experts + math.log(weight))


@MODELS.register("moe", params=MoEParams, routes_by_experience=True)
def moe(params: MoEParams, **kwargs: Any) -> MoEModel:
    """Lifelong MoE: expert groups grow per experience and freeze; an experience gate routes each sample."""
    return MoEModel(params, **kwargs)
