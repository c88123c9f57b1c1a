"""Per-experience keys for routing without task labels: for each class an experience introduced, a
diagonal Gaussian of each modality's token features; an experience scores a sample by the mixture of its
classes. Each sample is scored on its own, never per batch. No old data is stored: only means and variances."""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import nn


class PrototypeKeys(nn.Module):
    """Means and variances per (experience, class, modality) live in buffers, so they travel with checkpoints."""

    def __init__(self, var_floor: float = 1e-2) -> None:
        super().__init__()
        self.var_floor = var_floor

    @staticmethod
    def _name(exp: int, cls: int | str, modality: str, what: str) -> str:
        return f"e{exp}__c{cls}__{modality}__{what}"

    @property
    def experiences(self) -> List[int]:
        """Experiences with keys, read off the buffers (a loaded state dict is all there is to restore)."""
        return sorted(int(n[1:].split("__")[0]) for n, _ in self.named_buffers(recurse=False) if n.endswith("__self"))

    def _classes(self, exp: int) -> List[int]:
        prefix = f"e{exp}__c"
        found = {int(n[len(prefix):].split("__")[0]) for n, _ in self.named_buffers(recurse=False)
                 if n.startswith(prefix) and n.endswith("__mean")}
        return sorted(found)

    def has(self, exp: int, modality: str) -> bool:
        return any(hasattr(self, self._name(exp, c, modality, "mean")) for c in self._classes(exp))

    def fit(self, exp: int, tokens: Dict[str, torch.Tensor], present: Dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        """tokens[m]: (N, d) features of experience `exp`'s training samples; present[m]: (N,) bool; labels: (N,)."""
        for c in labels.unique().tolist():
            for m, z in tokens.items():
                rows = z[present[m] & (labels == c)].float()
                if len(rows) < 2:
                    continue
                self.register_buffer(self._name(exp, c, m, "mean"), rows.mean(0))
                self.register_buffer(self._name(exp, c, m, "var"), rows.var(0, unbiased=False) + self.var_floor)
        own = self.score(tokens, present, experiences=[exp])[:, 0]
        own = own[torch.isfinite(own)]
        if len(own) > 1:
            self.register_buffer(self._name(exp, "all", "all", "self"), torch.stack([own.mean(), own.std().clamp_min(1e-6)]))

    def _class_loglik(self, exp: int, cls: int, tokens: Dict[str, torch.Tensor], present: Optional[Dict[str, torch.Tensor]]) -> torch.Tensor:
        """Mean over present modalities of the per-dimension Gaussian log-likelihood: (B,), -inf if none."""
        any_tok = next(iter(tokens.values()))
        B, device = any_tok.shape[0], any_tok.device
        total = torch.zeros(B, device=device)
        count = torch.zeros(B, device=device)
        for m, z in tokens.items():
            name = self._name(exp, cls, m, "mean")
            if not hasattr(self, name):
                continue
            mean, var = getattr(self, name), getattr(self, self._name(exp, cls, m, "var"))
            ll = -0.5 * (((z.float() - mean) ** 2) / var + var.log() + math.log(2 * math.pi)).mean(-1)  # (B,)
            w = torch.ones(B, device=device) if present is None else present[m].float()
            total = total + ll * w
            count = count + w
        return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("-inf")))

    def score(self, tokens: Dict[str, torch.Tensor], present: Optional[Dict[str, torch.Tensor]] = None,
              experiences: Optional[List[int]] = None) -> torch.Tensor:
        """Log-score of each sample under each experience's class mixture: (B, n_exp); -inf where the
        experience has no keys for any of the sample's present modalities."""
        experiences = self.experiences if experiences is None else experiences
        any_tok = next(iter(tokens.values()))
        out = torch.full((any_tok.shape[0], len(experiences)), float("-inf"), device=any_tok.device)
        for col, e in enumerate(experiences):
            classes = self._classes(e)
            if classes:
                per_class = torch.stack([self._class_loglik(e, c, tokens, present) for c in classes], 1)  # (B, n_c)
                out[:, col] = torch.logsumexp(per_class, 1) - math.log(len(classes))
        return out

    def novelty(self, scores: torch.Tensor, experiences: Optional[List[int]] = None) -> tuple[int, float]:
        """(closest experience, z): how many of its own standard deviations the new data's mean score lies
        below the experience's own training data. scores: (n, n_exp) from `score`."""
        experiences = self.experiences if experiences is None else experiences
        best_e, best_z = experiences[0], float("inf")
        for col, e in enumerate(experiences):
            col_scores = scores[:, col]
            col_scores = col_scores[torch.isfinite(col_scores)]
            if len(col_scores) == 0:
                continue
            mean, std = getattr(self, self._name(e, "all", "all", "self")).tolist()
            z = (mean - col_scores.mean().item()) / std
            if z < best_z:
                best_e, best_z = e, z
        return best_e, best_z
