"""Per-experience keys for routing without task labels: for each class an experience introduced, a
diagonal Gaussian of each modality's token features; an experience scores a sample by the mixture of its
classes. Each sample is scored on its own, never per batch. No old data is stored: only means and variances."""

from __future__ import annotations

import math

import torch
from torch import nn

# log-score cost of each modality an experience's keys and a sample do not share: larger than any
# likelihood gap, so the set of modalities decides first
MODALITY_MISMATCH = 1e3


class PrototypeKeys(nn.Module):
    """Means and variances per (experience, class, modality) live in buffers, so they travel with checkpoints."""

    def __init__(self, var_floor: float = 1e-2) -> None:
        super().__init__()
        self.var_floor = var_floor
        self._cache: dict[tuple, tuple] = {}

    @staticmethod
    def _name(exp: int, cls: int | str, modality: str, what: str) -> str:
        return f"e{exp}__c{cls}__{modality}__{what}"

    @property
    def experiences(self) -> list[int]:
        """Experiences with keys, read off the buffers (a loaded state dict is all there is to restore)."""
        return sorted({int(n[1:].split("__")[0]) for n, _ in self.named_buffers(recurse=False) if n.endswith("__mean")})

    def _classes(self, exp: int) -> list[int]:
        prefix = f"e{exp}__c"
        found = {int(n[len(prefix):].split("__")[0]) for n, _ in self.named_buffers(recurse=False)
                 if n.startswith(prefix) and n.endswith("__mean")}
        return sorted(found)

    def _load_from_state_dict(self, *args, **kwargs):  # loaded values invalidate the stacked cache
        self._cache.clear()
        return super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):  # device or dtype moves invalidate the stacked cache
        self._cache.clear()
        return super()._apply(fn, recurse)

    def has(self, exp: int, modality: str) -> bool:
        return any(hasattr(self, self._name(exp, c, modality, "mean")) for c in self._classes(exp))

    def fit(self, exp: int, tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        """tokens[m]: (N, d) features of experience `exp`'s training samples; present[m]: (N,) bool; labels: (N,)."""
        self._cache.clear()
        for c in labels.unique().tolist():
            for m, z in tokens.items():
                rows = z[present[m] & (labels == c)].float()
                if len(rows) < 2:
                    continue
                self.register_buffer(self._name(exp, c, m, "mean"), rows.mean(0))
                self.register_buffer(self._name(exp, c, m, "var"), rows.var(0, unbiased=False) + self.var_floor)
        own = self.score(tokens, present, experiences=[exp])[:, 0]
        own = own[torch.isfinite(own)]
        self._cache.clear()
        if len(own) > 1:
            self.register_buffer(self._name(exp, "all", "all", "self"), torch.stack([own.mean(), own.std().clamp_min(1e-6)]))

    def _stacked(self, modalities: list[str], device: torch.device) -> tuple:
        """All (experience, class) keys as rows: experience of each row (R,), and per modality the stacked
        means and variances (R, d) with a mask of rows that have that modality. Cached until the next fit."""
        key = (tuple(modalities), str(device))
        if key not in self._cache:
            rows = [(e, c) for e in self.experiences for c in self._classes(e)]
            row_exp = torch.as_tensor([e for e, _ in rows], dtype=torch.long, device=device)
            per_modality = {}
            for m in modalities:
                has = [hasattr(self, self._name(e, c, m, "mean")) for e, c in rows]
                if not any(has):
                    continue
                ref = next(getattr(self, self._name(e, c, m, "mean")) for (e, c), h in zip(rows, has) if h)
                mean = torch.stack([getattr(self, self._name(e, c, m, "mean")) if h else torch.zeros_like(ref) for (e, c), h in zip(rows, has)])
                var = torch.stack([getattr(self, self._name(e, c, m, "var")) if h else torch.ones_like(ref) for (e, c), h in zip(rows, has)])
                per_modality[m] = (mean.to(device), var.to(device), torch.as_tensor(has, device=device))
            self._cache[key] = (row_exp, per_modality)
        return self._cache[key]

    def score(self, tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None,
              experiences: list[int] | None = None) -> torch.Tensor:
        """Log-score of each sample under each experience's class mixture: (B, n_exp); -inf where the
        experience has no keys for any of the sample's present modalities. A class's log-likelihood is the
        mean over the sample's present modalities of the per-dimension diagonal-Gaussian log-density."""
        experiences = self.experiences if experiences is None else experiences
        any_tok = next(iter(tokens.values()))
        B, device = any_tok.shape[0], any_tok.device
        out = torch.full((B, len(experiences)), float("-inf"), device=device)
        row_exp, per_modality = self._stacked(sorted(tokens), device)
        if len(row_exp) == 0:
            return out
        total = torch.zeros(B, len(row_exp), device=device)
        count = torch.zeros(B, len(row_exp), device=device)
        for m, (mean, var, has) in per_modality.items():
            z = tokens[m].float()
            # (B, R): E[(z - mu)^2 / var] over dimensions, expanded to avoid a (B, R, d) tensor
            inv = 1.0 / var
            quad = (z * z) @ inv.T - 2 * z @ (mean * inv).T + (mean * mean * inv).sum(1)
            ll = -0.5 * (quad + var.log().sum(1) + mean.shape[1] * math.log(2 * math.pi)) / mean.shape[1]
            w = (torch.ones(B, device=device) if present is None else present[m].float()).unsqueeze(1) * has.float()
            total = total + ll * w
            count = count + w
        row_ll = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("-inf")))  # (B, R)
        # routing by which modalities are present: an experience whose keys cover another set of modalities
        # than the sample carries (a modality it never saw, or one the sample lacks) ranks below one that
        # matches; among equally matching experiences the likelihood decides
        keyed = sum(has.float() for _, _, has in per_modality.values())  # (R,)
        carried = sum((torch.ones(B, device=device) if present is None else present[m].float()) for m in tokens)  # (B,)
        mismatch = (carried.unsqueeze(1) - count) + (keyed.unsqueeze(0) - count)  # (B, R)
        row_ll = row_ll - MODALITY_MISMATCH * mismatch
        # logsumexp of each experience's rows at once: rows -> output column (rows of other experiences dropped)
        col_of = torch.full((int(row_exp.max()) + 1,), -1, dtype=torch.long, device=device)
        col_of[torch.as_tensor(experiences, dtype=torch.long, device=device)] = torch.arange(len(experiences), device=device)
        row_col = col_of[row_exp]  # (R,)
        keep = row_col >= 0
        row_ll, row_col = row_ll[:, keep], row_col[keep]
        idx = row_col.expand(B, -1)
        peak = torch.full_like(out, float("-inf")).scatter_reduce(1, idx, row_ll, "amax")  # (B, n_exp)
        safe = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        summed = torch.zeros_like(out).scatter_add_(1, idx, (row_ll - safe.gather(1, idx)).exp())
        n_rows = torch.zeros(len(experiences), device=device).scatter_add_(0, row_col, torch.ones_like(row_col, dtype=torch.float))
        return torch.where(summed > 0, summed.log() + safe - n_rows.clamp_min(1).log(), out)

    def novelty(self, scores: torch.Tensor, experiences: list[int] | None = None) -> tuple[int, float]:
        """(closest experience, z): how many of its own standard deviations the new data's mean score lies
        below the experience's own training data. scores: (n, n_exp) from `score`."""
        experiences = self.experiences if experiences is None else experiences
        best_e, best_z = experiences[0], float("inf")
        for col, e in enumerate(experiences):
            col_scores = scores[:, col]
            col_scores = col_scores[torch.isfinite(col_scores)]
            stats = getattr(self, self._name(e, "all", "all", "self"), None)
            if len(col_scores) == 0 or stats is None:
                continue
            mean, std = stats.tolist()
            z = (mean - col_scores.mean().item()) / std
            if z < best_z:
                best_e, best_z = e, z
        return best_e, best_z
