"""A classifier from class statistics in fixed feature spaces: exemplar-free, no training by gradient.

Statistics are kept per row, a row being an (experience, class) pair: in class-incremental streams a row
is a class; when a class recurs in a later experience (domain-incremental), it gets a row there too, so
p(c | x) sums a class's rows and p(e | x) sums an experience's rows. Each modality has its own fixed
feature space (a view: random features of the raw input, or a frozen pretrained encoder), its own
statistics and its own linear discriminant (LDA with one shared, shrunk covariance). The modalities a
sample carries combine as a product of experts, each first mixed with a share `floor` of the uniform
distribution, so one modality that is wrong about a sample (e.g. corrupted) cannot veto the others; a
row whose set of modalities differs from the sample's ranks below every row that matches.

Two settings are chosen on validation data: the shrinkage per modality and the floor. When an experience
ends, each candidate is scored on its validation split, the correct counts add up over experiences (each
measured while its split was at hand, so no sample is kept), and the best so far wins; ties go to the
first shrinkage candidate and to the smallest floor.

`conditional` says how p(c | x, e) is read: `current` from today's discriminants (later data sharpen how
an earlier experience is told apart, and p(c | x) is plain LDA), `frozen` from the discriminants and
floor each experience ended with (a later domain, which reshapes the shared covariance, cannot move how
an earlier one is told apart). p(e | x) always uses everything seen.

Shape key: B samples, D features, R rows, C classes, E experiences."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from lifelong_moe.moe.cached import derived
from lifelong_moe.moe.segments import NEG, segment_logsumexp
from lifelong_moe.statistics.class_statistics import ClassStatistics, lda_weights

MODALITY_MISMATCH = 1e3  # log-score cost per modality a row and a sample do not share
WIDE = 1024  # features from which the kept scatter may be low rank (`rank_share`): its triangle passes 2 MB there
CONDITIONALS = ("current", "frozen")

Features = dict[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> (features (B, D), present (B,) bool)
Batch = tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]  # inputs, presence per modality, labels


class StatisticsClassifier(nn.Module):
    def __init__(self, *, shrinkages: Sequence[float], floors: Sequence[float], conditional: str = "current",
                 rank_share: float = 0.0) -> None:
        super().__init__()
        if conditional not in CONDITIONALS:
            raise ValueError(f"conditional must be one of {CONDITIONALS}, got {conditional!r}")
        self.shrinkages, self.floors, self.conditional = tuple(shrinkages), tuple(floors), conditional
        self.rank_share = rank_share  # of the kept scatter, as a share of each modality's width (`compact_scatter.py`)
        self.views = nn.ModuleDict()
        self.stats = nn.ModuleDict()
        self.register_buffer("row_experience", torch.zeros(0, dtype=torch.long))
        self.register_buffer("row_class", torch.zeros(0, dtype=torch.long))
        self.register_buffer("floor_correct", torch.zeros(len(self.floors), dtype=torch.float64))
        self.register_buffer("frozen_floor", torch.zeros(0))  # (R,) the floor each row was frozen with

    # ---- structure ----------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self.row_class)

    @property
    def frozen(self) -> bool:
        return self.conditional == "frozen"

    @property
    def nbytes(self) -> int:
        """Everything kept about the data: statistics and fitted discriminants (current and frozen)."""
        kept = [b for name, b in self.named_buffers() if not name.startswith("views.")]
        return sum(b.numel() * b.element_size() for b in kept)

    def add_modality(self, name: str, view: nn.Module) -> None:
        """A fixed feature space for modality `name`: a module (B, ...) -> (B, view.out_dim)."""
        device = self.row_class.device
        self.views[name] = view.to(device)
        rank = round(self.rank_share * view.out_dim) if view.out_dim >= WIDE else 0
        self.stats[name] = ClassStatistics(view.out_dim, self.n_rows, rank).to(device)
        self.register_buffer(f"shrinkage_correct_{name}", torch.zeros(len(self.shrinkages), dtype=torch.float64, device=device))
        for prefix in self._discriminants:
            self.register_buffer(f"{prefix}W_{name}", torch.zeros(view.out_dim, self.n_rows, device=device))
            self.register_buffer(f"{prefix}b_{name}", torch.full((self.n_rows,), NEG, device=device))

    @property
    def _discriminants(self) -> tuple[str, ...]:
        return ("", "frozen_") if self.frozen else ("",)

    def add_rows(self, experience: int, classes: Sequence[int]) -> None:
        """A row per class of a new experience."""
        device = self.row_class.device
        self.row_experience = torch.cat([self.row_experience, torch.full((len(classes),), experience, dtype=torch.long, device=device)])
        self.row_class = torch.cat([self.row_class, torch.as_tensor(list(classes), dtype=torch.long, device=device)])
        self.frozen_floor = torch.cat([self.frozen_floor, self.frozen_floor.new_zeros(len(classes))])
        for m, stats in self.stats.items():
            stats.grow(self.n_rows)
            self._resize(m)

    def _resize(self, m: str) -> None:
        for prefix in self._discriminants:
            W, b = getattr(self, f"{prefix}W_{m}"), getattr(self, f"{prefix}b_{m}")
            extra = self.n_rows - W.shape[1]
            if extra > 0:
                setattr(self, f"{prefix}W_{m}", torch.cat([W, W.new_zeros(W.shape[0], extra)], 1))
                setattr(self, f"{prefix}b_{m}", torch.cat([b, b.new_full((extra,), NEG)]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        rows = state_dict.get(prefix + "row_class")
        if rows is not None:  # grow to the checkpoint's rows before its values load
            self.row_class, self.row_experience = torch.zeros_like(rows), torch.zeros_like(rows)
            self.frozen_floor = self.frozen_floor.new_zeros(rows.shape)
            for m in self.views:
                self._resize(m)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def modalities_of(self, experience: int) -> frozenset[str]:
        """The modalities `experience`'s rows have statistics in."""
        mine = self.row_experience == experience
        return frozenset(m for m, stats in self.stats.items() if bool(stats.seen[mine].any()))

    def row_of(self, experience: int, labels: torch.Tensor) -> torch.Tensor:
        """(B,) the row of each label within `experience`."""
        lookup = torch.full((int(self.row_class.max()) + 1,), -1, dtype=torch.long, device=labels.device)
        mine = (self.row_experience == experience).nonzero(as_tuple=True)[0]
        lookup[self.row_class[mine]] = mine
        return lookup[labels]

    # ---- data ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def featurize(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor], fit_views: bool = False) -> Features:
        """Per known modality in the batch: (fixed features (B, D), presence (B,) bool)."""
        out = {}
        for m, view in self.views.items():
            if m in inputs:
                if fit_views and hasattr(view, "fit") and present[m].any():
                    view.fit(inputs[m][present[m]])  # standardisation: set once, by the first data seen
                out[m] = (view(inputs[m]), present[m])
        return out

    @torch.no_grad()
    def observe(self, feats: Features, rows: torch.Tensor) -> None:
        """Add samples to their rows (B,)."""
        for m, (z, keep) in feats.items():
            if keep.any():
                self.stats[m].update(z[keep], rows[keep])

    # ---- fitting ------------------------------------------------------------------------------------
    @property
    def floor(self) -> float:
        """The floor with the most correct validation answers so far; ties (and no evidence) to the smallest."""
        def best() -> float:
            counts = self.floor_correct.tolist()
            return max(self.floors, key=lambda f: (counts[self.floors.index(f)], -f))

        return derived(self.floor_correct, "floor", best)  # read every forward: no device sync

    @torch.no_grad()
    def fit(self, validation: tuple[Features, torch.Tensor] | None = None) -> dict[str, float]:
        """Refit every modality's discriminant. With the current experience's validation (features, rows),
        first score every candidate on it and add to the running counts. Returns the choices in use."""
        chosen: dict[str, float] = {}
        for m in self.views:
            if not bool(self.stats[m].seen.any()):
                continue
            counts = getattr(self, f"shrinkage_correct_{m}")
            fitted: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
            if validation is not None and m in validation[0]:
                (z, keep), rows = validation[0][m], validation[1]
                for k, shrinkage in enumerate(self.shrinkages):
                    W, b = fitted[shrinkage] = self._discriminant(m, shrinkage)
                    answers = self._class_posterior_of_rows((z[keep] @ W + b).log_softmax(1)).argmax(1)
                    counts[k] += float((answers == self.row_class[rows[keep]]).sum())
            shrinkage = self.shrinkages[int(counts.argmax())]  # ties and no evidence: the first candidate
            chosen[f"shrinkage/{m}"] = shrinkage
            W, b = fitted[shrinkage] if shrinkage in fitted else self._discriminant(m, shrinkage)
            getattr(self, f"W_{m}").copy_(W)
            getattr(self, f"b_{m}").copy_(b)
        if validation is not None:
            per_modality = self._modality_posteriors(validation[0])
            labels = self.row_class[validation[1]]
            for k, floor in enumerate(self.floors):
                answers = self._class_posterior_of_rows(self._combine(per_modality, floor)).argmax(1)
                self.floor_correct[k] += float((answers == labels).sum())
        chosen["floor"] = self.floor
        return chosen

    def _discriminant(self, m: str, shrinkage: float) -> tuple[torch.Tensor, torch.Tensor]:
        W, b = lda_weights(self.stats[m], shrinkage)
        return W.float(), b.clamp_min(NEG).float()

    @torch.no_grad()
    def freeze(self, experience: int) -> None:
        """Keep `experience`'s current discriminants and floor as its own (conditional `frozen` only)."""
        mine = self.row_experience == experience
        self.frozen_floor[mine] = self.floor
        if self.frozen:
            for m in self.views:
                getattr(self, f"frozen_W_{m}")[:, mine] = getattr(self, f"W_{m}")[:, mine]
                getattr(self, f"frozen_b_{m}")[mine] = getattr(self, f"b_{m}")[mine]

    @torch.no_grad()
    def learn(self, experience: int, train: Iterable[Batch], validation: list[Batch] | None,
              choose: Callable[[list[Batch]], dict[str, float]] | None = None) -> dict[str, float]:
        """Everything an experience adds, in order: its training data into the statistics; with a validation
        split, every candidate scored on it and the discriminants refitted with the winners, then `choose`
        (settings of a model built on this one, scored through that model on the same split), and finally
        the split itself into the statistics. Batches are (inputs, presence, labels). Returns the choices."""
        for x, present, y in train:
            self.observe(self.featurize(x, present, fit_views=True), self.row_of(experience, y))
        if validation is None:
            choices = self.fit(None)
            self.freeze(experience)
            self._settle()
            return choices
        feats: Features = {}
        for x, present, _ in validation:
            for m, (z, keep) in self.featurize(x, present).items():
                feats[m] = (torch.cat([feats[m][0], z]), torch.cat([feats[m][1], keep])) if m in feats else (z, keep)
        rows = self.row_of(experience, torch.cat([y for _, _, y in validation]))
        self.fit((feats, rows))
        self.freeze(experience)  # the candidates of `choose` are scored through what was just fitted
        extra = choose(validation) if choose is not None else {}
        self.observe(feats, rows)  # the held-out samples count, once chosen
        choices = self.fit(None)
        self.freeze(experience)
        self._settle()
        return {**choices, **extra}

    def _settle(self) -> None:
        """The experience is in: pack every scatter until the next one (`compact_scatter.py`)."""
        for stats in self.stats.values():
            stats.settle()

    # ---- inference ----------------------------------------------------------------------------------
    def _modality_posteriors(self, feats: Features) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality: (p_m(row | x) (B, R), presence (B,))."""
        return {m: ((z @ getattr(self, f"W_{m}") + getattr(self, f"b_{m}")).softmax(1), keep) for m, (z, keep) in feats.items()}

    def _combine(self, per_modality: dict[str, tuple[torch.Tensor, torch.Tensor]], floor: float) -> torch.Tensor:
        """log p(row | x) (B, R): the product over present modalities of (1 - floor) p_m + floor / R_m,
        restricted to rows some present modality knows, and ranked first by modality match. A fixed number of
        passes over (B, R) whatever the number of modalities: which rows a sample's modalities know, and how
        many modalities a row and a sample do not share, come from two matmuls of the presence (B, M) with
        the rows' modalities (M, R)."""
        known = torch.stack([self.stats[m].seen for m in per_modality]).float()  # (M, R)
        present = torch.stack([keep for _, keep in per_modality.values()], 1).float()  # (B, M)
        total = None
        for k, (m, (p, _)) in enumerate(per_modality.items()):
            uniform = 1.0 / max(self.stats[m].n_seen, 1)
            mixed = p.mul(max(1.0 - floor, 1e-12)).add_(uniform * max(floor, 1e-12)).log_()
            mixed = mixed.masked_fill_(~self.stats[m].seen, 0.0).mul_(present[:, k : k + 1])
            total = mixed if total is None else total.add_(mixed)
        absent = [stats.seen for m, stats in self.stats.items() if m not in per_modality]  # modalities the batch lacks
        fixed = known.sum(0) + (torch.stack(absent).float().sum(0) if absent else 0.0)  # (R,)
        # mismatch = sum_m [known_m(row) != present_m(sample)] = present @ (1 - 2 known) + sum_m known_m(row)
        total = total.add_(torch.addmm(fixed, present, 1.0 - 2.0 * known, alpha=-MODALITY_MISMATCH, beta=-MODALITY_MISMATCH))
        any_known = (present @ known) > 0  # (B, R) some present modality knows the row
        return total.masked_fill_(~any_known, NEG).log_softmax(1)

    def _class_posterior_of_rows(self, row_logp: torch.Tensor) -> torch.Tensor:
        """log p(c | x) (B, C) from log p(row | x): the sum over each class's rows."""
        return segment_logsumexp(row_logp, self.row_class, self._n_class_ids)

    @property
    def _n_class_ids(self) -> int:
        return derived(self.row_class, "n", lambda: int(self.row_class.max()) + 1)

    @property
    def _n_experience_ids(self) -> int:
        return derived(self.row_experience, "n", lambda: int(self.row_experience.max()) + 1)

    def row_log_posterior(self, feats: Features, extra: torch.Tensor | None = None) -> torch.Tensor:
        """log p(row | x) (B, R) from today's discriminants and floor; `extra` (B, R), another expert's log
        p(row | x) (e.g. `NestedStatistics` on learned features), joins the product."""
        rows = self._combine(self._modality_posteriors(feats), self.floor)
        return rows if extra is None else (rows + extra).log_softmax(1)

    def experience_log_posterior(self, feats: Features, experiences: Sequence[int], extra: torch.Tensor | None = None,
                                 rows: torch.Tensor | None = None) -> torch.Tensor:
        """log p(e | x) (B, n) over `experiences`: the sum of each one's rows (rows of others are dropped).
        `rows`: `row_log_posterior(feats, extra)`, when the caller has it already."""
        rows = self.row_log_posterior(feats, extra) if rows is None else rows
        extra = len(experiences)

        def columns() -> tuple[torch.Tensor, int]:
            col_of = {e: k for k, e in enumerate(experiences)}
            cols = [col_of.get(e, extra) for e in self.row_experience.tolist()]
            return torch.as_tensor(cols, device=rows.device), extra + (extra in cols)  # a spare segment for the rest

        cols, n = derived(self.row_experience, ("columns", tuple(experiences), rows.device), columns)
        return segment_logsumexp(rows, cols, n)[:, :extra]

    def conditional_log_posterior(self, feats: Features, extra: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """log p(c(row) | x, e(row)) (B, R): each row's share of its experience. `frozen`: from the
        discriminants and floor the experience ended with, normalised within each experience per modality,
        mixed there with its floor and fused over the modalities present. `extra` as in `row_log_posterior`
        (its share within each experience joins the product); `rows`: `row_log_posterior(feats, extra)`,
        when the caller has it already."""
        seg, E = self.row_experience, self._n_experience_ids
        within = lambda s: s - segment_logsumexp(s, seg, E).gather(1, seg.expand_as(s))  # noqa: E731
        if not self.frozen:
            return within(self.row_log_posterior(feats, extra) if rows is None else rows)
        floor = self.frozen_floor.clamp(1e-12, 1.0 - 1e-12)  # (R,)
        total = None
        for m, (z, keep) in feats.items():
            known = self.stats[m].seen
            W, b = getattr(self, f"frozen_W_{m}"), getattr(self, f"frozen_b_{m}")
            logp = within(torch.where(known, z @ W + b, torch.full_like(b, NEG)))
            uniform = -torch.zeros(E, device=seg.device).index_add_(0, seg, known.float()).clamp_min(1).log()[seg]  # (R,)
            mixed = torch.logaddexp(logp + torch.log1p(-floor), uniform + floor.log())
            part = torch.where(known, mixed, torch.zeros_like(mixed)) * keep.unsqueeze(1).float()
            total = part if total is None else total + part
        return within(total if extra is None else total + within(extra))

    def class_log_posterior(self, feats: Features, n_classes: int) -> torch.Tensor:
        """log p(c | x) (B, n_classes) = log sum_e p(e | x) p(c | x, e): under `current` plain LDA's posterior."""
        rows = self.row_log_posterior(feats)
        if self.frozen:
            seg, E = self.row_experience, self._n_experience_ids
            rows = segment_logsumexp(rows, seg, E).gather(1, seg.expand_as(rows)) + self.conditional_log_posterior(feats)
        return segment_logsumexp(rows, self.row_class, n_classes)
