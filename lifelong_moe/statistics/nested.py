"""Class statistics in the experts' own learned feature spaces, exact and exemplar-free (`gate: nested`).

Each group of experts, once its experience ends and it freezes, is a feature map f_g: its pooled tokens after
its encoders and after each of its layers, joined (`MoEModel.group_features`). A class seen at experience j
passes through the groups that exist then, f_0 .. f_j, so its statistics exist, exactly, in those spaces and
not in later ones (its data are gone). Instead of estimating what is missing, the decision is nested: stage s
(group s) tells the classes that group s learned apart from every class that came after it, in the space
[f_0 .. f_s], where all of them have exact statistics:

    p(row | x) = prod_{s < stage(row)} P_s(later than s | x) * P_stage(row)(row | x),

with P_s an LDA over the rows of stages >= s (one shared covariance, pooled from their samples, shrunk
towards a multiple of the identity; shrinkage chosen on validation data). The statistics of fixed feature
maps see what random features see; these see what each group learned, and a group trained on its two
classes responds to their shapes wherever they are. The cost: every group runs on every sample.

Shape key: B samples, d features per group, R rows (experience, class), S stages (groups)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lifelong_moe.moe.segments import NEG, segment_logsumexp
from lifelong_moe.statistics.class_statistics import ClassStatistics, lda_weights


class _Stage(nn.Module):
    """The statistics of every row in the space of groups 0..s, and the discriminant fitted on them."""

    def __init__(self, dim: int, n_rows: int) -> None:
        super().__init__()
        self.stats = ClassStatistics(dim, n_rows)
        self.register_buffer("W", torch.zeros(dim, n_rows))
        self.register_buffer("b", torch.full((n_rows,), NEG))

    def grow(self, n_rows: int) -> None:
        self.stats.grow(n_rows)
        extra = n_rows - self.W.shape[1]
        if extra > 0:
            self.W = torch.cat([self.W, self.W.new_zeros(self.W.shape[0], extra)], 1)
            self.b = torch.cat([self.b, self.b.new_full((extra,), NEG)])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "b")
        if saved is not None:
            self.grow(saved.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class NestedStatistics(nn.Module):
    def __init__(self, dim: int, shrinkages: Sequence[float]) -> None:
        super().__init__()
        self.dim, self.shrinkages = dim, tuple(shrinkages)
        self.stages = nn.ModuleList()
        self.register_buffer("row_stage", torch.zeros(0, dtype=torch.long))
        self.register_buffer("shrinkage_correct", torch.zeros(len(self.shrinkages), dtype=torch.float64))

    @property
    def n_rows(self) -> int:
        return len(self.row_stage)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def settle(self) -> None:
        """The experience is in: pack every stage's scatter until the next one (`compact_scatter.py`)."""
        for stage in self.stages:
            stage.stats.settle()

    def add_stage(self) -> None:
        """A new group: a stage whose space is every group so far, itself included."""
        device = self.row_stage.device
        self.stages.append(_Stage(self.dim * (len(self.stages) + 1), self.n_rows).to(device))

    def add_rows(self, stage: int, n: int) -> None:
        """`n` rows (an experience's classes) decided at `stage` (its group)."""
        self.row_stage = torch.cat([self.row_stage, torch.full((n,), stage, dtype=torch.long, device=self.row_stage.device)])
        for s in self.stages:
            s.grow(self.n_rows)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "row_stage")
        if saved is not None:
            self.row_stage = torch.zeros_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def observe(self, feats: Sequence[torch.Tensor], rows: torch.Tensor) -> None:
        """Add samples (features of groups 0.. (B, d) each; all rows of one stage) to every stage up to it."""
        top = int(self.row_stage[rows].max())
        z = torch.cat(list(feats[: top + 1]), 1).double()
        for s in range(top + 1):
            self.stages[s].stats.update(z[:, : self.dim * (s + 1)], rows)

    @property
    def shrinkage(self) -> float:
        return self.shrinkages[int(self.shrinkage_correct.argmax())]  # ties and no evidence: the first

    @torch.no_grad()
    def fit(self, validation: tuple[Sequence[torch.Tensor], torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
        """Refit every stage's discriminant; with validation (features, rows, row classes), first score every
        shrinkage candidate on it (class answers over every row) and add to the running counts."""
        if validation is not None:
            feats, rows, row_class = validation
            for k, shrinkage in enumerate(self.shrinkages):
                self._fit_stages(shrinkage)
                logp = self.log_posterior(feats)
                n = int(row_class.max()) + 1
                answers = segment_logsumexp(logp, row_class, n).argmax(1)
                self.shrinkage_correct[k] += float((answers == row_class[rows]).sum())
        self._fit_stages(self.shrinkage)
        return {"nested_shrinkage": self.shrinkage}

    def _fit_stages(self, shrinkage: float) -> None:
        for stage in self.stages:
            if bool(stage.stats.seen.any()):
                W, b = lda_weights(stage.stats, shrinkage)
                stage.W.copy_(W.float())
                stage.b.copy_(b.clamp_min(NEG).float())

    def log_posterior(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """log p(row | x) (B, R) by the nested chain; `feats`: every group's features (B, d)."""
        B = feats[0].shape[0]
        out = feats[0].new_full((B, self.n_rows), NEG)
        carry = feats[0].new_zeros(B)  # log P(a later stage than those done | x)
        for s, stage in enumerate(self.stages):
            candidates = self.row_stage >= s
            if not bool(stage.stats.seen[self.row_stage == s].any()):  # nothing fitted yet (the experience in training)
                continue
            z = torch.cat(list(feats[: s + 1]), 1)
            scores = torch.where(candidates & stage.stats.seen, z @ stage.W + stage.b, torch.full_like(stage.b, NEG))
            logp = scores.log_softmax(1)
            mine, later = self.row_stage == s, self.row_stage > s
            out = torch.where(mine, carry.unsqueeze(1) + logp, out)
            if bool((later & stage.stats.seen).any()):
                carry = carry + torch.logsumexp(logp.masked_fill(~later, NEG), 1)
            else:
                break
        return out
