"""A lifelong MoE classifier: modality tokens flow through MoE layers whose experts grow per experience
(or per modality, or on novelty) and freeze afterwards; each sample is routed to the experts of the
experience it most likely comes from, judged by per-experience keys, without task labels.

Prediction is hierarchical: p(c | x) = p(e(c) | x) * softmax over e's classes of head_e(features), where
e(c) is the experience that introduced class c and p(e | x) comes from the keys (one-hot under hard
routing). Training experience e routes to e's experts and fits e's head on e's classes only.

Shape key: B samples, M modalities, n present tokens, D width, E routed experts, C classes."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lifelong_moe.config.schema import TrainConfig
from lifelong_moe.errors import ConfigError
from lifelong_moe.models.continual_module import ContinualModule, Prediction
from lifelong_moe.models.encoders import key_view
from lifelong_moe.models.moe_probes import NEG, CommunicationProbe, RoutingProbe, StatisticsProbe
from lifelong_moe.models.statistics_routing import StatisticsRouting
from lifelong_moe.moe import COMMUNICATION, GROWTH, MoELayer, PrototypeKeys, decide_growth
from lifelong_moe.moe.drift_bound import project_into_bound, relative_drift
from lifelong_moe.moe.segments import segment_logsumexp
from lifelong_moe.registry import MODELS
from scenarios import Experience
from scenarios.modality import MASK_KEY, ModalitySpec


@dataclass
class MoEParams:
    embed_dim: int = 64  # width of the modality tokens and the experts' input and output
    n_layers: int = 2  # MoE layers
    expert_hidden: int = 128  # hidden width of each expert's MLP
    experts_per_growth: int = 2  # experts added to every layer at each growth step
    k: int = 2  # experts per token (at most experts_per_growth under hard routing)
    n_shared_experts: int = 0  # always-on experts, trained in the first experience
    gate_noise: float = 0.0  # std of Gaussian noise on router logits in training
    balance_loss_weight: float = 0.01  # weight of the load-balancing loss
    z_loss_weight: float = 0.001  # weight of the router z-loss (keeps router logits small)
    growth: str = "experience"  # experience | modality | novelty | evidence (moe/growth.py)
    reuse_accuracy: float = 0.9  # evidence: reuse a group when the model already classifies the new data this well
    novelty_threshold: float = 3.0  # novelty: grow when new data lies this many stds below the closest key
    max_experts: int = 0  # per layer; 0: no cap. Beyond it the closest group is reused
    freeze_old: bool = True  # experts, router columns, heads and norms of past experiences stop training
    old_expert_lr_scale: float = 0.0  # > 0: a reused group's old experts keep training at lr * scale
    encoder_training: str = "introduced"  # introduced: train a modality's encoder in the experience that brings
    # it, then freeze; never: keep random encoders frozen; always: keep training (old paths and keys drift);
    # per_group: every new group gets its own copy of the encoders, warm-started from the group it grew from
    # (or the previous experience's), trained with its experts and frozen with them
    task_routing: str = "statistics"  # statistics: p(e | x) and p(c | x, e) from class statistics in fixed
    # feature spaces (statistics_routing.py); keys: per-experience diagonal Gaussians of raw-input views
    stats_classifier: str = "lda"  # lda | ridge, on each modality's fixed features
    stats_conditional: str = "auto"  # p_stat(c | x, e) from each experience's discriminant as it was when e ended
    # (frozen), as it is now (current), or frozen from the first experience whose classes recur (auto)
    stats_refit: str = "evidence"  # once frozen, earlier experiences take the refitted discriminants when a later
    # experience's validation split shows it shares their within-class covariance (evidence), or never
    stats_width: int = 2048  # most features per modality (ROCKET: 2 per kernel); 4 per first-experience sample below that
    stats_seed: int = 1234  # the fixed feature spaces' seed (independent of the run's)
    shrinkages: list[float] = field(default_factory=lambda: [0.1, 0.01, 0.03, 0.3, 0.6, 0.9])  # candidates,
    # chosen on validation (the first wins without validation data)
    floors: list[float] = field(default_factory=lambda: [0.1, 0.0, 0.03, 0.3])  # uniform share per modality
    expert_weights: list[float] = field(default_factory=lambda: [0.5, 0.0, 0.25, 0.75, 1.0])  # w: the routed
    # experts' head against the statistics within the routed experience
    key_space: str = "input"  # keys: fixed views of the raw input (input) or encoder tokens (features)
    key_routing: str = "hard"  # hard: only the most likely experience's experts; soft: a log-prior bias
    key_weight: float = 5.0  # soft routing: bias = key_weight * log p(group | x)
    key_temperature: float = 1.0  # p(e | x) = softmax(key score / temperature)
    key_var_floor: float = 0.05  # compared 0.01, 0.05, 0.2 on the default stream; 0.05 routed best
    key_fit_samples: int = 4096  # training samples used to fit each experience's keys
    communication: str = "none"  # none | lateral | attention | shared (lifelong_moe/moe/communication.py)
    router: str = "shared"  # shared: one router for all tokens; per_modality: one per modality over the same experts
    shared_anchor: float = 1.0  # shared: weight of the L2 pull of shared experts to their previous values
    shared_drift_bound: float | None = None  # shared: most relative distance a shared expert may move from its
    # values at the end of the first experience (0: frozen after it; None: no bound, the anchor alone)


class ExperienceHead(nn.Module):
    """Linear head over the classes one experience introduced."""

    def __init__(self, dim: int, classes: list[int]) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, len(classes))
        self.register_buffer("classes", torch.as_tensor(classes, dtype=torch.long))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h)


@dataclass
class ExperiencePosterior:
    """Over the experiences with heads: which experts to use and how to weigh each experience's prediction."""

    experiences: list[int]  # the columns, sorted
    routing: torch.Tensor  # (B, n_exp) log-weights choosing the experts (one-hot under hard routing)
    mixture: torch.Tensor  # (B, n_exp) log p(e | x) weighing each experience's prediction
    conditional: torch.Tensor | None = None  # (B, R) log p_stat(c | x, e) per statistics row, if any


@dataclass
class MoEForward:
    logits: torch.Tensor  # (B, C)
    aux_loss: torch.Tensor  # scalar: weighted balance + z losses over layers
    token_sample: torch.Tensor  # (n,) sample of each present token
    token_modality: torch.Tensor  # (n,) modality index (order of self.encoders)
    routings: list[Any]  # per layer: Routing
    comm_stats: list[dict] = field(default_factory=list)  # per layer: what communication did
    posterior: ExperiencePosterior | None = None  # the routing and mixture over experiences


class MoEClassifier(ContinualModule):
    def __init__(self, params: MoEParams, *, n_classes: int, scenario: str, train: TrainConfig) -> None:
        _check(params)
        super().__init__(n_classes=n_classes, scenario=scenario, train=train, embed_dim=params.embed_dim)
        self.settings = params
        self.layers = nn.ModuleList(
            MoELayer(params.embed_dim, params.expert_hidden, params.k, params.gate_noise, params.n_shared_experts,
                     params.communication, router_per_modality=params.router == "per_modality")
            for _ in range(params.n_layers)
        )
        # shared communication: the shared experts' values at the end of the last experience, as buffers
        # (so checkpoints carry them), and whether they are set yet
        self._anchored = [(f"anchor__{n.replace('.', '__')}", p) for n, p in self.layers.named_parameters() if ".shared." in n]
        self._anchors_shared = COMMUNICATION.get(params.communication, "model.params.communication").anchors_shared_experts
        if self._anchors_shared:
            for name, p in self._anchored:
                self.register_buffer(name, p.detach().clone())
            self.register_buffer("anchor_set", torch.tensor(False))
        # with a drift bound, each shared expert's values when first anchored: [(parameter, origin buffer name)]
        self._bounded: list[list[tuple[nn.Parameter, str]]] = []
        if self._anchors_shared and params.shared_drift_bound is not None:
            experts: dict[str, list[tuple[nn.Parameter, str]]] = {}
            for name, p in self._anchored:
                origin = name.replace("anchor__", "origin__", 1)
                self.register_buffer(origin, p.detach().clone())
                experts.setdefault(name.rsplit("__", 2)[0], []).append((p, origin))
            self._bounded = list(experts.values())
        self.final_norm = nn.LayerNorm(params.embed_dim)
        self.heads = nn.ModuleDict()
        self.keys = PrototypeKeys(params.key_var_floor)
        self.statistics = StatisticsRouting(
            classifier=params.stats_classifier, width=params.stats_width, seed=params.stats_seed,
            shrinkages=params.shrinkages, floors=params.floors, expert_weights=params.expert_weights,
            conditional=params.stats_conditional, refit=params.stats_refit,
        ) if params.task_routing == "statistics" else None
        self.experience_group: dict[int, int] = {}
        # per_group encoders: group -> {modality: that group's encoder}; group 0, and modalities a group's
        # copy lacks (added after it grew), use self.encoders
        self.group_encoders = nn.ModuleDict()
        self.experience_task: dict[int, int] = {}
        self.growth_log: dict[int, str] = {}
        self._old_reused: set = set()  # ids of a reused group's old expert parameters (trained at a lower rate)
        self._trained: set = set()  # ids of parameters that lived through a finished experience

    # ---- structure ------------------------------------------------------------------------------
    @property
    def n_groups(self) -> int:
        return len(set(self.experience_group.values()))

    @property
    def expert_owner(self) -> list[int]:
        return list(self.layers[0].pool.owner)

    def on_experience_start(self, exp: Experience) -> None:
        e = exp.index
        old_params = [p for p in self.parameters() if id(p) in self._trained]
        known = list(self.encoders)  # modalities seen before: a new one's encoder trains as under `introduced`
        new_modality = any(m not in known for m in exp.modality_specs)
        known_accuracy, route_share = self._growth_evidence(exp)  # the model as it was, before this experience
        if self.statistics is not None:
            self.statistics.settle_width(exp.spec.n_train)
        super().on_experience_start(exp)  # encoders for new modalities, class masks
        self.experience_task[e] = int(exp.task_label)

        closest, z = self._closest_known_group(exp.dataset)
        decision = decide_growth(
            self.settings.growth, n_groups=self.n_groups, n_experts=self.layers[0].n_experts,
            experts_per_growth=self.settings.experts_per_growth, max_experts=self.settings.max_experts,
            new_modality=new_modality, closest_group=closest, novelty_z=z, novelty_threshold=self.settings.novelty_threshold,
            known_accuracy=known_accuracy, route_share=route_share, reuse_accuracy=self.settings.reuse_accuracy,
        )
        if decision.grow:
            group = self.n_groups
            for layer in self.layers:
                layer.grow(self.settings.experts_per_growth, group, init_from=decision.init_from)
            if self.settings.encoder_training == "per_group" and group > 0:
                source = decision.init_from if decision.init_from is not None else self.experience_group[e - 1]
                self._grow_encoders(group, self._encoders_of(source), known)
        else:
            group = int(decision.reuse_group)
        self.experience_group[e] = group
        self.growth_log[e] = decision.reason
        self.heads[str(e)] = ExperienceHead(self.settings.embed_dim, exp.classes).to(self.device)
        if self.statistics is not None:
            self.statistics.start(exp)
        self._freeze(old_params, group)

    def _encoders_of(self, group: int) -> dict[str, nn.Module]:
        # nn.ModuleDict has no .get()
        own = self.group_encoders[str(group)] if str(group) in self.group_encoders else {}  # noqa: SIM401
        return {m: own[m] if m in own else enc for m, enc in self.encoders.items()}  # noqa: SIM401

    def _grow_encoders(self, group: int, source: dict[str, nn.Module], modalities: list[str]) -> None:
        """`group`'s own encoders for `modalities`: trainable copies of `source`'s."""
        copies = nn.ModuleDict({m: copy.deepcopy(source[m]) for m in modalities})
        self.group_encoders[str(group)] = copies.requires_grad_(True)

    def _tokens_by_group(self, inputs: dict[str, Any], tokens: dict[str, torch.Tensor], post: ExperiencePosterior,
                         groups: torch.Tensor) -> dict[str, torch.Tensor]:
        """per_group encoders: each sample's tokens from the encoders of its most likely experience's group
        (`groups`: the group of each experience in `post`)."""
        sample_group = groups[post.routing.argmax(1)]  # (B,)
        out = dict(tokens)
        for g in sample_group.unique().tolist():
            if str(g) not in self.group_encoders:
                continue
            rows = (sample_group == g).nonzero(as_tuple=True)[0]
            for m, encoder in self.group_encoders[str(g)].items():
                if m in out:
                    out[m] = out[m].index_put((rows,), encoder(inputs[m][rows]) + self.modality_embed[m])
        return out

    def _freeze(self, old_params: list[nn.Parameter], group: int) -> None:
        """Everything that existed before this experience stops training, except what the settings keep:
        encoders under encoder_training=always, and the reused group's experts under old_expert_lr_scale."""
        encoder_params = {id(p) for p in self.encoders.parameters()} | {id(p) for p in self.modality_embed.parameters()}
        reused = {id(p) for layer in self.layers for expert in layer.pool.experts_of(group)
                  for p in expert.parameters()} if self.settings.old_expert_lr_scale > 0 else set()
        shared = {id(p) for _, p in self._anchored} if self._anchors_shared else set()
        for p in old_params:
            if id(p) in encoder_params:
                p.requires_grad_(self.settings.encoder_training == "always")
            elif id(p) in reused or id(p) in shared:
                p.requires_grad_(True)
            else:
                p.requires_grad_(not self.settings.freeze_old)
        self._old_reused = {id(p) for p in old_params if id(p) in reused}

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        scaled = [p for p in self.parameters() if p.requires_grad and id(p) in self._old_reused]
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in self._old_reused]
        groups = [{"params": rest}]
        if scaled:
            groups.append({"params": scaled, "lr": self.train_cfg.lr * self.settings.old_expert_lr_scale})
        return groups

    def on_experience_end(self, exp: Experience) -> None:
        """Fit this experience's keys and class statistics on its data, through the (now settled) encoders."""
        tokens, present, labels = self._encode_dataset(exp.dataset, self.settings.key_fit_samples)
        self.keys.fit(exp.index, tokens, present, labels)
        self._trained = {id(p) for p in self.parameters()}
        if self._anchors_shared:
            if not bool(self.anchor_set):
                for expert in self._bounded:
                    for p, origin in expert:
                        getattr(self, origin).copy_(p.detach())
            for name, p in self._anchored:
                getattr(self, name).copy_(p.detach())
            self.anchor_set.fill_(True)
        if self.statistics is not None and not self.rehearsing:  # the featurisation is rehearsed by forward passes
            was_training = self.training
            self.eval()
            self.statistics.finish(exp, self._batches, lambda x, w: self.forward_outputs(x, expert_weight=w).logits)
            self.train(was_training)

    def _batches(self, dataset: Any, limit: int | None = None) -> Iterator[tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]]:
        """(inputs, presence per modality, labels) of every sample (or the first `limit`), on the model's device."""
        loader = DataLoader(dataset, batch_size=512, shuffle=False, collate_fn=getattr(dataset, "collate_fn", None))
        seen = 0
        for x, y, _ in loader:
            x = super().transfer_batch_to_device(x, self.device, 0)
            yield x, self.presence(x), y.to(self.device)
            seen += len(y)
            if limit is not None and seen >= limit:
                return

    def presence(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """(B,) bool per modality the model knows and the batch holds."""
        mask = inputs.get(MASK_KEY, {})
        return {m: mask[m].bool() if m in mask else torch.ones(len(inputs[m]), dtype=torch.bool, device=inputs[m].device)
                for m in self.encoders if m in inputs}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After each optimizer step: shared experts back within their drift bound (if one is set)."""
        if self._bounded and bool(self.anchor_set):
            project_into_bound(self._bounded_pairs(), self.settings.shared_drift_bound)

    def _bounded_pairs(self) -> list[list[tuple[nn.Parameter, torch.Tensor]]]:
        return [[(p, getattr(self, origin)) for p, origin in expert] for expert in self._bounded]

    def shared_drift(self) -> float | None:
        """Largest relative distance of a shared expert from its first anchored values (bounded runs only)."""
        if not self._bounded or not bool(self.anchor_set):
            return None
        return max(relative_drift(expert) for expert in self._bounded_pairs())

    def anchor_penalty(self) -> torch.Tensor:
        """shared communication: squared distance of the shared experts from their last experience's values."""
        if not self._anchors_shared or not bool(self.anchor_set):
            return self.layers[0].norm.weight.new_zeros(())
        return sum((p - getattr(self, name)).pow(2).sum() for name, p in self._anchored)

    @torch.no_grad()
    def _encode_dataset(self, dataset: Any, limit: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """Key inputs, presence masks and labels of up to `limit` samples, computed in eval mode without grad."""
        was_training = self.training
        self.eval()
        loader = DataLoader(dataset, batch_size=512, shuffle=False, collate_fn=getattr(dataset, "collate_fn", None))
        tokens: dict[str, list[torch.Tensor]] = {}
        present: dict[str, list[torch.Tensor]] = {}
        labels: list[torch.Tensor] = []
        seen = 0
        for x, y, _ in loader:
            x = super().transfer_batch_to_device(x, self.device, 0)
            tok, pres = self.modality_tokens(x)
            tok = self.key_inputs(x, tok)
            for m in tok:
                tokens.setdefault(m, []).append(tok[m])
                present.setdefault(m, []).append(pres[m])
            labels.append(y.to(self.device))
            seen += len(y)
            if seen >= limit:
                break
        self.train(was_training)
        return {m: torch.cat(v) for m, v in tokens.items()}, {m: torch.cat(v) for m, v in present.items()}, torch.cat(labels)

    @torch.no_grad()
    def _growth_evidence(self, exp: Experience) -> tuple[float | None, dict[int, float]]:
        """For policies that ask: the current model's accuracy on the new experience's samples of classes it
        already knows (its validation split, else up to 512 training samples), and the share of those
        samples it routes to each group. (None, {}) before any head exists or when no class is known."""
        if not GROWTH.meta(self.settings.growth).get("needs_evidence") or not len(self.heads):
            return None, {}
        was_training = self.training
        self.eval()
        correct = total = 0
        routed: dict[int, int] = {}
        for x, _, y in self._batches(exp.validation if exp.validation is not None else exp.dataset, limit=512):
            known = self.seen_classes[y]
            if not known.any():
                continue
            out = self.forward_outputs(x)
            post = out.posterior
            correct += int((out.logits.masked_fill(~self.seen_classes, NEG).argmax(1) == y)[known].sum())
            total += int(known.sum())
            for col in post.routing.argmax(1)[known].tolist():
                g = self.experience_group[post.experiences[col]]
                routed[g] = routed.get(g, 0) + 1
        self.train(was_training)
        if total == 0:
            return None, {}
        return correct / total, {g: n / total for g, n in sorted(routed.items())}

    def _closest_known_group(self, dataset: Any) -> tuple[int | None, float | None]:
        """The group whose experience keys best explain the new data, and its novelty z-score."""
        needs = GROWTH.meta(self.settings.growth).get("needs_novelty", False) or self.settings.max_experts > 0
        if not needs or not self.keys.experiences:
            return None, None
        tokens, present, _ = self._encode_dataset(dataset, 512)
        known = {m: t for m, t in tokens.items() if any(self.keys.has(e, m) for e in self.keys.experiences)}
        if not known:
            return None, None
        closest_exp, z = self.keys.novelty(self.keys.score(known, {m: present[m] for m in known}))
        return self.experience_group[closest_exp], z

    def add_modality(self, name: str, spec: ModalitySpec) -> None:
        super().add_modality(name, spec)
        for layer in self.layers:
            layer.add_modality_router(name)
        if self.statistics is not None:
            self.statistics.add_modality(name, spec)
        if self.settings.encoder_training == "never":
            self.encoders[name].requires_grad_(False)
            self.modality_embed[name].requires_grad_(False)

    def key_inputs(self, inputs: dict[str, Any], tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the keys see per modality: fixed raw-input views, or the encoder tokens (detached)."""
        if self.settings.key_space == "features":
            return {m: t.detach() for m, t in tokens.items()}
        return {m: key_view(self.modality_specs[m], inputs[m]) for m in tokens}

    # ---- forward --------------------------------------------------------------------------------
    def experience_log_posterior(self, inputs: dict[str, Any], tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                                 task_labels: torch.Tensor | None, current: int | None) -> ExperiencePosterior:
        """Per sample, over the experiences with heads: the current experience in training, the task label
        in task-incremental mode, else the class statistics (or the older keys)."""
        exps = sorted(int(e) for e in self.heads)
        B, device = next(iter(tokens.values())).shape[0], next(iter(tokens.values())).device
        if current is not None:
            logp = torch.tensor([0.0 if e == current else NEG for e in exps], device=device).expand(B, -1)
            return ExperiencePosterior(exps, logp, logp)
        if self.task_incremental and task_labels is not None:
            match = torch.stack([task_labels == self.experience_task[e] for e in exps], 1)  # (B, n_exp)
            logp = torch.where(match, 0.0, NEG) - match.sum(1, keepdim=True).clamp_min(1).log()
            return ExperiencePosterior(exps, logp, logp)
        if self.statistics is not None:
            mixture, conditional = self.statistics.experience_posterior(inputs, present, exps)
            routing = _harden(mixture) if self.settings.key_routing == "hard" else mixture
            return ExperiencePosterior(exps, routing, mixture, conditional)
        scores = self.keys.score(self.key_inputs(inputs, tokens), present, experiences=exps)  # (B, n_exp)
        if not torch.isfinite(scores).any():  # no keys yet (the untrained model): every experience alike
            scores = torch.zeros_like(scores)
        logp = torch.log_softmax(scores.clamp_min(NEG) / self.settings.key_temperature, dim=1)
        logp = _harden(logp) if self.settings.key_routing == "hard" else logp
        return ExperiencePosterior(exps, logp, logp)

    def forward_outputs(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None,
                        current: int | None = None, expert_weight: float | None = None) -> MoEForward:
        tokens, present = self.modality_tokens(inputs)
        post = self.experience_log_posterior(inputs, tokens, present, task_labels, current)
        B = post.routing.shape[0]
        groups = torch.as_tensor([self.experience_group[e] for e in post.experiences], device=post.routing.device)
        if len(self.group_encoders):
            tokens = self._tokens_by_group(inputs, tokens, post, groups)
        group_logp = segment_logsumexp(post.routing, groups, self.n_groups)  # (B, G)
        expert_logp = group_logp[:, torch.as_tensor(self.expert_owner, device=group_logp.device)]  # (B, E)

        z = torch.stack(list(tokens.values()), 1)  # (B, M, D)
        pres = torch.stack(list(present.values()), 1)  # (B, M)
        token_sample, token_modality = pres.nonzero(as_tuple=True)  # (n,), (n,)
        h = z[token_sample, token_modality]  # (n, D)
        restrict = current is not None or (self.task_incremental and task_labels is not None) or self.settings.key_routing == "hard"
        if restrict:
            allowed, bias = (expert_logp > NEG / 2)[token_sample], None
        else:
            allowed, bias = None, (self.settings.key_weight * expert_logp.clamp_min(-1e4))[token_sample]

        aux = h.new_zeros(())
        routings, comm_stats = [], []
        for layer in self.layers:
            out = layer(h, bias=bias, allowed=allowed, token_modality=token_modality, modality_names=list(tokens))
            h = out.hidden
            aux = aux + self.settings.balance_loss_weight * out.balance_loss + self.settings.z_loss_weight * out.z_loss
            routings.append(out.routing)
            comm_stats.append(out.stats)

        pooled = h.new_zeros(B, h.shape[1]).index_add_(0, token_sample, h)
        pooled = self.final_norm(pooled / pres.sum(1, keepdim=True).clamp_min(1).to(h.dtype))  # (B, D)
        return MoEForward(self._combine(post, pooled, current, expert_weight), aux, token_sample, token_modality, routings,
                          comm_stats, post)

    def _combine(self, post: ExperiencePosterior, pooled: torch.Tensor, current: int | None, expert_weight: float | None) -> torch.Tensor:
        """(B, C) log p(c | x) = logsumexp over experiences e of log p(e | x) + log p(c | x, e); heads that share
        classes (domain-incremental) add up. With statistics, p(c | x, e) mixes in their conditional. All
        heads run as one matmul over their stacked columns, so the cost does not grow in operations."""
        if current is not None:  # training: only the current head can win
            head = self.heads[str(current)]
            logits = pooled.new_full((pooled.shape[0], self.n_classes), NEG)
            logits[:, head.classes] = torch.log_softmax(head(pooled), dim=1)
            return logits
        heads = [self.heads[str(e)] for e in post.experiences]
        if not heads:  # the untrained model
            return pooled.new_full((pooled.shape[0], self.n_classes), NEG)
        sizes = torch.tensor([len(h.classes) for h in heads], device=pooled.device)
        col = torch.repeat_interleave(torch.arange(len(heads), device=pooled.device), sizes)  # (K,) head of each column
        out = pooled @ torch.cat([h.linear.weight for h in heads]).T + torch.cat([h.linear.bias for h in heads])  # (B, K)
        cond = out - segment_logsumexp(out, col, len(heads)).gather(1, col.expand_as(out))  # softmax within each head
        if post.conditional is not None:
            weight = self.statistics.column_weights(post.experiences, col, candidate=expert_weight)
            stat = post.conditional[:, self.statistics.rows_in_experience_order()]  # row k = head column k
            cond = self.statistics.combine(stat, cond, post.routing.argmax(1, keepdim=True) == col, weight)
        classes = torch.cat([h.classes for h in heads])
        return segment_logsumexp(cond + post.mixture[:, col], classes, self.n_classes)

    def logits(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of the classes of every head; classes without a head score NEG (finite, so no NaN)."""
        return self.forward_outputs(inputs, task_labels).logits

    def forward(self, inputs: dict[str, Any], task_labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.logits(inputs, task_labels)
        mask = self.class_mask(task_labels, logits.shape[0])
        return logits.masked_fill(~mask, NEG)

    def training_loss(self, x: dict[str, Any], y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_outputs(x, t, current=self.experience)
        return F.cross_entropy(out.logits, y) + out.aux_loss + self.settings.shared_anchor * self.anchor_penalty(), out.logits

    # ---- evaluation: the probes the evaluator runs ---------------------------------------------------
    def evaluation_step(self, inputs: dict[str, Any], task_labels: torch.Tensor | None) -> Prediction:
        out = self.forward_outputs(inputs, task_labels)
        mask = self.class_mask(task_labels, out.logits.shape[0])
        return Prediction(out.logits.masked_fill(~mask, NEG), out)

    def evaluation_probes(self) -> list[Any]:
        probes = [RoutingProbe(), CommunicationProbe(self.settings.communication)]
        return [*probes, StatisticsProbe()] if self.statistics is not None else probes

    # ---- accounting -----------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        counts = super().parameter_counts()
        n = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        k_eff = min(self.settings.k, self.settings.experts_per_growth) if self.settings.key_routing == "hard" else self.settings.k
        active = n(self.encoders) + n(self.modality_embed) + n(self.final_norm) + n(self.heads)
        for layer in self.layers:
            per_expert = layer.pool.params_per_expert
            router = n(layer.router) if not layer.router_per_modality else max((n(r) for r in layer.modality_routers.values()), default=0)
            active += n(layer.norm) + router + n(layer.pool.shared) + min(k_eff, len(layer.pool)) * per_expert
            if len(layer.comm):  # the newest group's module, reading every older group's experts
                newest = max(int(g) for g in layer.comm)
                active += n(layer.comm[str(newest)]) + sum(g < newest for g in layer.pool.owner) * per_expert
        counts["active_per_sample"] = active
        counts["routed_experts_per_layer"] = len(self.expert_owner)
        return counts

    def stored_bytes(self) -> int:
        keys = sum(b.numel() * b.element_size() for b in self.keys.buffers())
        return keys + (self.statistics.nbytes if self.statistics is not None else 0)

    def structure_state(self) -> dict[str, Any]:
        names = {id(p): n for n, p in self.named_parameters()}
        return {
            **super().structure_state(),
            "experience_group": dict(self.experience_group),
            "experience_task": dict(self.experience_task),
            "growth_log": dict(self.growth_log),
            "heads": {e: head.classes.tolist() for e, head in self.heads.items()},
            "expert_owner": self.expert_owner,
            "keys": {n: list(b.shape) for n, b in self.keys.named_buffers(recurse=False)},
            "trained": sorted(names[i] for i in self._trained if i in names),
            "old_reused": sorted(names[i] for i in self._old_reused if i in names),
            "statistics_choices": dict(self.statistics.choices) if self.statistics is not None else {},
            "statistics_width": self.statistics.width if self.statistics is not None else None,
            "group_encoders": {g: list(encoders) for g, encoders in self.group_encoders.items()},
        }

    def restore_structure(self, state: dict[str, Any]) -> None:
        if self.statistics is not None:
            self.statistics.width = state["statistics_width"]
        super().restore_structure(state)
        groups_seen: list[int] = []
        for g in state["expert_owner"]:
            if g not in groups_seen:
                groups_seen.append(g)
                for layer in self.layers:
                    layer.grow(state["expert_owner"].count(g), g)
        for g, modalities in state.get("group_encoders", {}).items():  # the values come with the state dict
            self._grow_encoders(int(g), self.encoders, modalities)
        for e, classes in state["heads"].items():
            self.heads[str(e)] = ExperienceHead(self.settings.embed_dim, classes).to(self.device)
        for name, shape in state["keys"].items():
            self.keys.register_buffer(name, torch.zeros(shape, device=self.device))
        self.experience_group = {int(k): v for k, v in state["experience_group"].items()}
        self.experience_task = {int(k): v for k, v in state["experience_task"].items()}
        self.growth_log = {int(k): v for k, v in state["growth_log"].items()}
        params = dict(self.named_parameters())
        self._trained = {id(params[n]) for n in state["trained"]}
        self._old_reused = {id(params[n]) for n in state["old_reused"]}
        if self.statistics is not None:
            self.statistics.choices = {int(k): v for k, v in state.get("statistics_choices", {}).items()}

    def structure_summary(self) -> dict[str, Any]:
        e = self.experience
        summary = {"group": self.experience_group.get(e), "growth": self.growth_log.get(e), "n_groups": self.n_groups}
        return {**summary, "shared_drift": self.shared_drift()} if self._bounded else summary


def _check(p: MoEParams) -> None:
    def bad(key: str, msg: str) -> None:
        raise ConfigError(f"model.params.{key}: {msg}")

    for key in ("embed_dim", "n_layers", "expert_hidden", "experts_per_growth", "k"):
        if getattr(p, key) < 1:
            bad(key, f"must be at least 1, got {getattr(p, key)}")
    if p.growth not in GROWTH:
        bad("growth", f"unknown policy '{p.growth}'; use one of {', '.join(GROWTH)}")
    if p.key_routing not in ("hard", "soft"):
        bad("key_routing", f"use hard or soft, got '{p.key_routing}'")
    if p.max_experts and p.max_experts < p.experts_per_growth:
        bad("max_experts", f"must be 0 (no cap) or at least experts_per_growth ({p.experts_per_growth})")
    if p.k > p.experts_per_growth:
        bad("k", f"must not exceed experts_per_growth ({p.experts_per_growth}): a sample is routed within one group")
    if p.key_space not in ("input", "features"):
        bad("key_space", f"use input or features, got '{p.key_space}'")
    if p.encoder_training not in ("introduced", "never", "always", "per_group"):
        bad("encoder_training", f"use introduced, never, always or per_group, got '{p.encoder_training}'")
    if p.key_temperature <= 0:
        bad("key_temperature", "must be positive")
    if p.router not in ("shared", "per_modality"):
        bad("router", f"use shared or per_modality, got '{p.router}'")
    if p.communication not in COMMUNICATION:
        bad("communication", f"unknown mode '{p.communication}'; use one of {', '.join(COMMUNICATION)}")
    if p.shared_drift_bound is not None and (p.shared_drift_bound < 0 or not COMMUNICATION.get(p.communication).anchors_shared_experts):
        bad("shared_drift_bound", f"a bound >= 0 for communication=shared, got {p.shared_drift_bound} with "
            f"communication={p.communication}")
    if COMMUNICATION.get(p.communication).anchors_shared_experts and p.n_shared_experts < 1:
        bad("n_shared_experts", f"communication={p.communication} needs at least 1 shared expert")
    if p.task_routing not in ("statistics", "keys"):
        bad("task_routing", f"use statistics or keys, got '{p.task_routing}'")
    if p.stats_classifier not in ("lda", "ridge"):
        bad("stats_classifier", f"use lda or ridge, got '{p.stats_classifier}'")
    if p.stats_conditional not in ("auto", "current", "frozen"):
        bad("stats_conditional", f"use auto, current or frozen, got '{p.stats_conditional}'")
    if p.stats_refit not in ("evidence", "never"):
        bad("stats_refit", f"use evidence or never, got '{p.stats_refit}'")
    if not 0.0 <= p.reuse_accuracy <= 1.0:
        bad("reuse_accuracy", f"must lie in [0, 1], got {p.reuse_accuracy}")
    if p.stats_width < 1:
        bad("stats_width", f"must be at least 1, got {p.stats_width}")
    for key, low, high in (("shrinkages", 0.0, 1.0), ("floors", 0.0, 1.0), ("expert_weights", 0.0, 1.0)):
        values = getattr(p, key)
        if not values or any(not low <= v <= high for v in values):
            bad(key, f"give one or more candidates in [{low:g}, {high:g}], got {list(values)}")
    if p.stats_classifier == "ridge" and 0.0 in p.shrinkages:
        bad("shrinkages", "ridge needs positive candidates (the relative ridge penalty)")


def _harden(logp: torch.Tensor) -> torch.Tensor:
    """All mass on each sample's most likely column: (B, n) log-weights of 0 and NEG."""
    return torch.full_like(logp, NEG).scatter_(1, logp.argmax(1, keepdim=True), 0.0)


@MODELS.register("moe", params=MoEParams, routes_by_experience=True)
def moe(params: MoEParams, **kwargs: Any) -> MoEClassifier:
    """Lifelong MoE: experts grow per experience and freeze; task-free routing by class statistics (task_routing)."""
    return MoEClassifier(params, **kwargs)
