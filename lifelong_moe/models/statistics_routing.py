"""Task-free routing and prediction for the MoE from class statistics (`task_routing: statistics`).

For every modality a fixed feature space (its kind's `fixed_features`, e.g. random convolution kernels
for signals) holds the statistics of each (experience, class) row. They give, per sample, p(row | x),
hence p(e | x), the posterior of the experience that taught each class, and p(c | x, e). The experts of
the most likely experience run on the sample (hard routing) and their head refines the prediction for
that experience's classes:

    p(c | x) = p(e | x) * [(1 - w) p_stat(c | x, e) + w p_head(c | x, e)]   for the routed e,
    p(c | x) = p(e | x) * p_stat(c | x, e)                                 for every other e,

with the expert weight w chosen on validation data, like the shrinkage and the floor of the statistics
(see `ClassPosterior`). p_stat(c | x, e) and w are those of the end of e (`conditional: frozen`), or the
latest ones (`current`: later data refine how an earlier experience is told apart, which helps when it
had few samples and hurts when a later domain spreads differently); `auto` is `current` until an
experience brings a class seen before (a new domain, which reshapes the shared covariance), and from then
on freezes: the experiences before it keep what they had then, every later one what it ends with.
Frozen is not final: with `refit: evidence` (the default) the validation split of each later experience
that brings classes seen before tells whether it shares the earlier experiences' within-class covariance
(`ClassPosterior.pooling_evidence`), and if it does, the earlier experiences with the same modalities take
the discriminants and floor refitted with its data too (their w stays; its evidence and the choices made
with its split are measured on samples that carry all its modalities, which need not hold for fewer): a
later domain improves an earlier one without any of the earlier one's samples (backward transfer), while
a domain that spreads differently (e.g. a noisier one) leaves them as they were, and is itself left out
of later refits.
p(e | x) always uses the latest statistics, and once frozen a floor of its own
(`ClassPosterior.experience_floor`). After an experience trains, its training data pass once through the
fixed spaces; its validation split scores the candidates and is then added to the statistics too."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from lifelong_moe.distributed import as_rank_zero_has_it
from lifelong_moe.models.encoders import fixed_features
from lifelong_moe.moe.class_posterior import ClassPosterior, Features
from lifelong_moe.moe.segments import segment_logsumexp
from scenarios import Experience
from scenarios.modality import ModalitySpec

Batches = Iterator[tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]]  # inputs, presence, labels


class StatisticsRouting(nn.Module):
    def __init__(self, *, classifier: str, width: int, seed: int, shrinkages: Sequence[float], floors: Sequence[float],
                 expert_weights: Sequence[float], conditional: str = "auto", refit: str = "evidence") -> None:
        super().__init__()
        self.conditional, self.refit = conditional, refit
        self.max_width, self.seed = width, seed
        self.width: int | None = None  # settled by the first experience (`settle_width`)
        self.posterior = ClassPosterior(classifier, shrinkages, floors)
        self.expert_weights = tuple(expert_weights)
        self.register_buffer("weight_correct", torch.zeros(len(self.expert_weights), dtype=torch.float64))
        self.register_buffer("frozen_weight", torch.zeros(0))  # per experience once freezing: its w
        self.choices: dict[int, dict[str, float]] = {}  # per experience: what validation chose

    @property
    def expert_weight(self) -> float:
        return self.expert_weights[int(self.weight_correct.argmax())]

    @property
    def frozen(self) -> bool:
        """Whether p_stat(c | x, e) and w are the frozen ones (see the module's docstring)."""
        return self.posterior.freezing

    def column_weights(self, experiences: list[int], col: torch.Tensor, candidate: float | None = None) -> float | torch.Tensor:
        """The expert weight: one value, or with frozen conditionals each head column's experience's (K,).
        `candidate`: a value of w to score for the newest experience (the others keep theirs)."""
        if not self.frozen:
            return self.expert_weight if candidate is None else candidate
        index = torch.as_tensor(experiences, device=col.device)
        weights = self.frozen_weight[index]
        if candidate is not None:
            weights = torch.where(index == max(experiences), candidate, weights)
        return weights[col]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "frozen_weight")
        if saved is not None:
            self.frozen_weight = self.frozen_weight.new_zeros(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def nbytes(self) -> int:
        return self.posterior.nbytes

    def current_choices(self) -> dict[str, float]:
        """The candidates in use: shrinkage per modality, the floor and the expert weight."""
        post = self.posterior
        chosen = {f"shrinkage/{m}": post.shrinkages[int(getattr(post, f"shrinkage_correct_{m}").argmax())] for m in post.views}
        return {**chosen, "floor": post.floor, **self._experience_floor(), "expert_weight": self.expert_weight}

    def _experience_floor(self) -> dict[str, float]:
        return {"experience_floor": self.posterior.experience_floor} if self.frozen else {}

    def settle_width(self, n_train: int) -> None:
        """Fix the feature width once, from the first experience's size: 4 features per training sample,
        rounded up to a power of two, at least 256 and at most `stats_width`. Beyond that the shared
        covariance is mostly shrinkage, and a wider space costs D^3 per refit and D^2 bytes for nothing."""
        if self.width is None:
            wanted = 1 << max(8, math.ceil(math.log2(max(4 * n_train, 1))))
            self.width = min(self.max_width, wanted)

    def add_modality(self, name: str, spec: ModalitySpec) -> None:
        if self.width is None:
            raise RuntimeError("settle_width() must run before the first modality is added")
        # a seed per modality name, independent of the global RNG (growth must not depend on it)
        self.posterior.add_modality(name, fixed_features(spec, self.width, self.seed + zlib.crc32(name.encode())))

    def start(self, exp: Experience) -> None:
        recurs = bool(torch.isin(torch.as_tensor(exp.classes, device=self.posterior.row_class.device), self.posterior.row_class).any())
        self.posterior.add_rows(exp.index, exp.classes)
        if not self.frozen and (self.conditional == "frozen" or (self.conditional == "auto" and recurs)):
            self.posterior.start_freezing()  # the experiences so far keep what they have now (w below)
        if self.frozen:  # w of experiences without one, this one's until it ends: the current choice
            grown = torch.full((exp.index + 1,), self.expert_weight, device=self.frozen_weight.device)
            grown[: len(self.frozen_weight)] = self.frozen_weight[: exp.index + 1]
            self.frozen_weight = grown

    # ---- inference ----------------------------------------------------------------------------------
    def experience_posterior(self, inputs: dict[str, Any], present: dict[str, torch.Tensor],
                             experiences: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(e | x) (B, n_exp) over `experiences`, log p_stat(c | x, e(row)) per row (B, R))."""
        if self.frozen:
            rows, conditional = self.posterior.frozen_conditional(inputs, present)  # (B, R) each
        else:
            rows, conditional = self.posterior.row_log_posterior(inputs, present), None
        col_of = {e: k for k, e in enumerate(experiences)}
        extra = len(experiences)  # rows of an experience outside `experiences` sum into a column dropped below
        cols = torch.as_tensor([col_of.get(e, extra) for e in self.posterior.row_experience.tolist()], device=rows.device)
        exp_logp = segment_logsumexp(rows, cols, extra + 1)
        if conditional is None:
            conditional = rows - exp_logp.gather(1, cols.expand_as(rows))
        return exp_logp[:, :extra], conditional

    def rows_in_experience_order(self) -> torch.Tensor:
        """Row indices grouped by experience, classes in each experience's order: the heads' column order."""
        return torch.argsort(self.posterior.row_experience, stable=True)

    @staticmethod
    def combine(stat: torch.Tensor, head: torch.Tensor, routed: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
        """log p(c | x, e): the statistics' conditional, mixed with the head's where e is the routed experience
        (`routed`: a bool mask broadcastable to `stat`); `weight`: one w, or one per column (K,)."""
        if isinstance(weight, torch.Tensor):
            mixed = torch.logaddexp(stat + torch.log1p(-weight), head + weight.log())  # log 0 = -inf drops a side
            return torch.where(routed, mixed, stat)
        if weight <= 0:
            return stat
        mixed = head if weight >= 1 else torch.logaddexp(stat + math.log(1 - weight), head + math.log(weight))
        return torch.where(routed, mixed, stat)

    # ---- after an experience ------------------------------------------------------------------------
    def _freeze(self, experience: int) -> None:
        self.posterior.freeze_rows(experience)
        if self.frozen:
            self.frozen_weight[experience] = self.expert_weight

    @torch.no_grad()
    def finish(self, exp: Experience, batches: Any, score: Any) -> dict[str, float]:
        """Add the experience's training data to the statistics, choose the candidates on its validation
        split (if any), then add that split too and refit. Once frozen, the split also decides whether the
        earlier experiences take the refitted discriminants (`refit: evidence`). `batches(dataset)` yields
        (inputs, presence, labels) on the model's device; `score(inputs, weight)` gives the model's logits
        with expert weight w."""
        post = self.posterior
        earlier = post.row_experience < exp.index
        recurs = bool(torch.isin(post.row_class[earlier], torch.as_tensor(exp.classes, device=earlier.device)).any())
        judge = self.refit == "evidence" and self.frozen and recurs and exp.validation is not None
        before = post.scatters() if judge else {}
        for x, present, y in batches(exp.dataset):
            post.observe(post.featurize(x, present, fit_views=True), post.row_of(exp.index, y))
        if exp.validation is None:
            self.choices[exp.index] = {**post.fit(None), **self._experience_floor(), "expert_weight": self.expert_weight}
            self._freeze(exp.index)
            return self.choices[exp.index]
        val = [(x, present, y) for x, present, y in batches(exp.validation)]
        feats: Features = {}
        for x, present, _ in val:
            for m, (z, keep) in post.featurize(x, present).items():
                feats[m] = (torch.cat([feats[m][0], z]), torch.cat([feats[m][1], keep])) if m in feats else (z, keep)
        rows = post.row_of(exp.index, torch.cat([y for _, _, y in val]))
        evidence = as_rank_zero_has_it({f"pooling/{k}": v for k, v in post.pooling_evidence(exp.index, before, (feats, rows)).items()}) if judge else {}
        post.fit((feats, rows))
        post.freeze_rows(exp.index)  # the candidates are scored through the conditional just fitted
        self._score_candidates(exp.index, val, score)
        post.observe(feats, rows)  # the held-out samples count, once chosen
        self.choices[exp.index] = {**post.fit(None), **self._experience_floor(), "expert_weight": self.expert_weight, **evidence}
        self._freeze(exp.index)
        if evidence.get("pooling/shares"):  # the earlier experiences take what was refitted with this one's data,
            modalities = post.modalities_of(exp.index)  # except those whose own evidence said they spread
            for e in range(exp.index):  # differently, and those with other modalities, which its split does not show
                if self.choices.get(e, {}).get("pooling/shares", 1.0) and post.modalities_of(e) == modalities:
                    post.freeze_rows(e)
        return self.choices[exp.index]

    def _score_candidates(self, experience: int, val: list, score: Any) -> None:
        """Add each expert weight's and each floor's correct answers on the validation split `val`, as the
        model gives them (the other settings at their choice so far); the statistics' own answers rank the
        floors first (`ClassPosterior.floor`). Once frozen and two experiences or more are known, the floor
        of p(e | x) (`ClassPosterior.experience_floor`) is scored too, after the conditional's."""
        def correct(w: float | None) -> float:
            return sum(float((score(x, w).argmax(1) == y).sum()) for x, _, y in val)

        for k, w in enumerate(self.expert_weights):
            self.weight_correct[k] += correct(w)
        if self.frozen:  # the floors are scored with the w chosen so far, which this experience's columns read
            self.frozen_weight[experience] = self.expert_weight
        post = self.posterior
        try:
            for k, floor in enumerate(post.floors):
                post.floor_override = floor
                post.freeze_rows(experience)  # once freezing, this experience's rows read their frozen floor
                post.floor_model_correct[k] += correct(None)
        finally:
            post.floor_override = None
            post.freeze_rows(experience)
        if self.frozen and int(post.row_experience.max()) > 0:  # with one experience p(e | x) = 1 whatever its floor
            try:
                for k, floor in enumerate(post.floors):
                    post.experience_floor_override = floor
                    post.experience_floor_correct[k] += correct(None)
            finally:
                post.experience_floor_override = None
