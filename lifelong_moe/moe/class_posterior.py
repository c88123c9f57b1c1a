"""p(experience, class | x) from class statistics in fixed feature spaces, without task labels and
without stored samples.

Statistics are kept per row, a row being an (experience, class) pair: in class-incremental streams a
row is a class; when a class recurs in a later experience (domain-incremental), it gets a row there too,
so the rows of one class form a mixture, and p(c | x) sums its rows while p(e | x) sums an experience's
rows. One space per modality, one linear discriminant per modality (a shared covariance over rows),
fused as a product of experts over the modalities a sample carries. Each modality's posterior is mixed
with a share `floor` of the uniform distribution first, so a modality that is wrong about a sample (e.g.
corrupted) cannot veto the others; a row whose set of modalities differs from the sample's ranks below
every row that matches (routing by what is present).

Once `start_freezing` is called, each row's discriminant is also kept as it was then, and every later
experience's as it was when that experience ended (`freeze_rows`): the conditional p(c | x, e) can be read
from those, so that data arriving later (a new domain of the same classes, which reshapes the shared
covariance) does not move how an earlier experience tells its classes apart, while the posterior over
experiences keeps using everything seen. A new experience's discriminant is fitted with all the
statistics so far, so earlier domains still help it. Before that, nothing frozen is kept. An earlier
experience may take a later refit when the later experience's held-out data show that the two share
their within-class covariance (`pooling_evidence`): pooling then serves both sides.

Shrinkage (per modality) and the floor are chosen on validation data: at the end of every experience
its validation split is scored under every candidate, the counts of correct answers add up over the
experiences (each measured while its split was at hand, so no sample is kept), and the best so far wins.
Both are scored here, by the posterior's own answers; floors those cannot tell apart (with one modality
and as many rows per class, the floor changes no answer of the posterior, it only flattens it) are scored
again by the answers of the model that uses the posterior (`floor_override` while a candidate is scored),
since (before conditionals are frozen) the floor sets how much of p(e | x) each experience keeps. Once
they are, p(e | x) takes a floor of its own (`experience_floor`), scored by the model's answers on every
later experience's split: the floor inside each frozen conditional and the share every experience gets
of every sample are different questions, and one value chosen for the first (on the first experience,
where the second has no effect) let every later experience take a share of every earlier one's samples.

Shape key: B samples, D features, R rows, C classes, E experiences."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lifelong_moe.moe.class_statistics import (
    ClassStatistics,
    gaussian_log_likelihood,
    lda_weights,
    ridge_weights,
    shrunk,
)
from lifelong_moe.moe.segments import segment_logsumexp

NEG = -1e9  # log-probability of the impossible; finite, so no NaN appears downstream
MODALITY_MISMATCH = 1e3  # log-score cost per modality a row and a sample do not share
WIDTH_Z = 2.576  # two-sided 1% level: a later experience's spread differs from the pooled one beyond it

Features = dict[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> (features (B, D), present (B,) bool)


class ClassPosterior(nn.Module):
    def __init__(self, classifier: str = "lda", shrinkages: Sequence[float] = (0.01, 0.03, 0.1, 0.3),
                 floors: Sequence[float] = (0.0, 0.05, 0.1, 0.2)) -> None:
        super().__init__()
        self.classifier = classifier
        self.shrinkages, self.floors = tuple(shrinkages), tuple(floors)
        self.views = nn.ModuleDict()
        self.stats = nn.ModuleDict()
        self.register_buffer("row_experience", torch.zeros(0, dtype=torch.long))
        self.register_buffer("row_class", torch.zeros(0, dtype=torch.long))
        self.register_buffer("floor_correct", torch.zeros(len(self.floors), dtype=torch.float64))
        self.register_buffer("floor_model_correct", torch.zeros(len(self.floors), dtype=torch.float64))
        self.register_buffer("frozen_floor", torch.zeros(0))  # per row once freezing: the floor it was frozen with
        self.register_buffer("experience_floor_correct", torch.zeros(len(self.floors), dtype=torch.float64))
        self.floor_override: float | None = None  # a candidate floor being scored
        self.experience_floor_override: float | None = None  # a candidate floor of p(e | x) being scored

    # ---- structure ----------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self.row_class)

    @property
    def nbytes(self) -> int:
        """Everything kept about the data: statistics and fitted discriminants (current and frozen)."""
        fitted = sum(getattr(self, f"{kind}_{m}").numel() for m in self.views for kind in ("W", "b", "frozen_W", "frozen_b")) * 4
        return sum(s.nbytes for s in self.stats.values()) + fitted + 16 * self.n_rows + 4 * len(self.frozen_floor)

    def add_modality(self, name: str, view: nn.Module) -> None:
        device = self.row_class.device
        self.views[name] = view.to(device)
        self.stats[name] = ClassStatistics(view.out_dim, self.n_rows).to(device)
        self.register_buffer(f"W_{name}", torch.zeros(view.out_dim, self.n_rows, device=device))
        self.register_buffer(f"b_{name}", torch.full((self.n_rows,), NEG, device=device))
        self.register_buffer(f"frozen_W_{name}", torch.zeros(view.out_dim, len(self.frozen_floor), device=device))
        self.register_buffer(f"frozen_b_{name}", torch.full((len(self.frozen_floor),), NEG, device=device))
        self.register_buffer(f"shrinkage_correct_{name}", torch.zeros(len(self.shrinkages), dtype=torch.float64, device=device))

    def add_rows(self, experience: int, classes: Sequence[int]) -> None:
        """A row per class of a new experience."""
        new_e = torch.full((len(classes),), experience, dtype=torch.long, device=self.row_class.device)
        self.row_experience = torch.cat([self.row_experience, new_e])
        self.row_class = torch.cat([self.row_class, torch.as_tensor(list(classes), dtype=torch.long, device=self.row_class.device)])
        if self.freezing:
            self.frozen_floor = torch.cat([self.frozen_floor, self.frozen_floor.new_zeros(len(classes))])
        for m, stats in self.stats.items():
            stats.grow(self.n_rows)
            self._resize_discriminant(m)

    def _resize_discriminant(self, m: str) -> None:
        for prefix in ("", "frozen_") if self.freezing else ("",):
            W, b = getattr(self, f"{prefix}W_{m}"), getattr(self, f"{prefix}b_{m}")
            extra = self.n_rows - W.shape[1]
            if extra > 0:
                setattr(self, f"{prefix}W_{m}", torch.cat([W, W.new_zeros(W.shape[0], extra)], 1))
                setattr(self, f"{prefix}b_{m}", torch.cat([b, b.new_full((extra,), NEG)]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        rows = state_dict.get(prefix + "row_class")
        if rows is not None:  # grow to the checkpoint's rows before its values load
            self.row_class, self.row_experience = torch.zeros_like(rows), torch.zeros_like(rows)
            self.frozen_floor = self.frozen_floor.new_zeros(state_dict.get(prefix + "frozen_floor", self.frozen_floor[:0]).shape)
            for m in self.views:
                self._resize_discriminant(m)
        if prefix + "row_class" in state_dict and prefix + "experience_floor_correct" not in state_dict:
            # saved before p(e | x) had a floor of its own: no evidence yet, so it keeps reading `floor`
            state_dict[prefix + "experience_floor_correct"] = torch.zeros_like(self.experience_floor_correct)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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

    # ---- fitting ------------------------------------------------------------------------------------
    def _discriminant(self, m: str, shrinkage: float) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.stats[m]
        W, b = ridge_weights(stats, shrinkage) if self.classifier == "ridge" else lda_weights(stats, shrinkage)
        return W.float(), b.clamp_min(NEG).float()

    def scatters(self) -> dict[str, torch.Tensor]:
        """A copy of every modality's pooled scatter (D, D): taken before an experience's data arrive, it
        tells that experience's own scatter apart afterwards (its rows are new, so the two simply add)."""
        return {m: stats.scatter.clone() for m, stats in self.stats.items()}

    @torch.no_grad()
    def pooling_evidence(self, experience: int, before: dict[str, torch.Tensor], validation: tuple[Features, torch.Tensor]) -> dict[str, float]:
        """Whether `experience` shares the within-class covariance of the experiences before it, judged on
        its validation split (features and rows, not yet in the statistics), from the split's deviations
        from their class means (scaled by sqrt(n_c / (n_c + 1)), since the means come from n_c training
        samples), per modality:
        - shape: their mean Gaussian log-likelihood under the covariance pooled over every row so far (its
          training data included) and under its own training data's covariance alone (`before`: the
          scatters before its data arrived, see `scatters`), each at its best shrinkage on the split;
        - width: the trace of its own covariance against the pooled one's (from the training data, many
          more samples than the split), with a z-score of the log ratio from the sampling variance of each
          trace (`_log_trace_variance`).
        It shares when pooling describes it better than its own estimate and no modality's width differs
        at the 1% level (|z| <= 2.576): then the one pooled matrix is taken to serve the earlier
        experiences as well as it serves this one. Returns {} when no modality can be judged."""
        (feats, rows), mine = validation, self.row_experience == experience
        out: dict[str, float] = {"pooled_loglik": 0.0, "own_loglik": 0.0}
        widths_agree = True
        for m, (z, keep) in feats.items():
            stats = self.stats[m]
            keep = keep & stats.seen[rows]  # a class without training data in m has no mean to deviate from
            dof = float(stats.count[mine].sum() - stats.seen[mine].sum())
            pooled = stats.covariance()
            trace = float(torch.trace(pooled))
            if m not in before or int(keep.sum()) < 2 or dof < 1 or not math.isfinite(trace) or trace <= 0:
                continue
            own = (stats.scatter - before[m]) / dof
            width = float(torch.trace(own)) / trace
            if not width > 0:  # no spread of its own (e.g. a constant feature map)
                continue
            pooled_dof = float(stats.count.sum() - stats.seen.sum())
            width_z = math.log(width) / math.sqrt(_log_trace_variance(own, dof) + _log_trace_variance(pooled, pooled_dof))
            n_c = stats.count[rows[keep]]
            deviation = (z[keep].double() - stats.mean[rows[keep]]) * (n_c / (n_c + 1)).sqrt()[:, None]  # (N, D)
            out["pooled_loglik"] += max(gaussian_log_likelihood(deviation, shrunk(pooled, s)) for s in self.shrinkages)
            out["own_loglik"] += max(gaussian_log_likelihood(deviation, shrunk(own, s)) for s in self.shrinkages)
            out[f"width_ratio/{m}"], out[f"width_z/{m}"] = width, width_z
            widths_agree = widths_agree and abs(width_z) <= WIDTH_Z
        if not any(k.startswith("width_ratio/") for k in out):
            return {}
        out["shares"] = float(out["pooled_loglik"] > out["own_loglik"] and widths_agree)
        return out

    @torch.no_grad()
    def fit(self, validation: tuple[Features, torch.Tensor] | None = None) -> dict[str, float]:
        """Refit every modality's discriminant. With validation (features, rows) of the current experience,
        first score every candidate on it and add to the running counts. Returns the choices."""
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
                    counts[k] += float((self._classes((z[keep] @ W + b).log_softmax(1)).argmax(1) == self.row_class[rows[keep]]).sum())
            shrinkage = self.shrinkages[int(counts.argmax())]  # ties and no evidence: the first candidate
            chosen[f"shrinkage/{m}"] = shrinkage
            W, b = fitted[shrinkage] if shrinkage in fitted else self._discriminant(m, shrinkage)
            getattr(self, f"W_{m}").copy_(W)
            getattr(self, f"b_{m}").copy_(b)
        if validation is not None:
            per_modality = self.modality_log_posteriors(validation[0])
            labels = self.row_class[validation[1]]
            for k, floor in enumerate(self.floors):
                self.floor_correct[k] += float((self._classes(self.combine(per_modality, floor)).argmax(1) == labels).sum())
        chosen["floor"] = self.floor
        return chosen

    @property
    def freezing(self) -> bool:
        return len(self.frozen_floor) > 0

    @torch.no_grad()
    def start_freezing(self) -> None:
        """From now on keep frozen discriminants: every existing row's current one, as it is now."""
        self.frozen_floor = torch.full((self.n_rows,), self.floor, device=self.row_class.device)
        for m in self.views:
            setattr(self, f"frozen_W_{m}", getattr(self, f"W_{m}").clone())
            setattr(self, f"frozen_b_{m}", getattr(self, f"b_{m}").clone())

    @torch.no_grad()
    def freeze_rows(self, experience: int) -> None:
        """Keep the current discriminant (and floor) of `experience`'s rows as their frozen one (once freezing)."""
        if not self.freezing:
            return
        mine = self.row_experience == experience
        self.frozen_floor[mine] = self.floor
        for m in self.views:
            getattr(self, f"frozen_W_{m}")[:, mine] = getattr(self, f"W_{m}")[:, mine]
            getattr(self, f"frozen_b_{m}")[mine] = getattr(self, f"b_{m}")[mine]

    @property
    def floor(self) -> float:
        """The floor with the most correct validation answers of the statistics (`floor_correct`); among
        floors those cannot tell apart (e.g. one modality, whose posterior the floor only flattens when
        every class has as many rows), the one with the most correct answers of the model that uses them
        (`floor_model_correct`, counted in `StatisticsRouting._score_candidates`: there the floor sets how
        much p(e | x) each experience keeps, until `experience_floor` is scored; after that only the newest
        experience's frozen conditional); among floors neither can tell apart, the smallest. Without
        validation data, the first candidate. `floor_override`, while set, is a candidate being scored."""
        if self.floor_override is not None:
            return self.floor_override
        if not bool(self.floor_correct.any() or self.floor_model_correct.any()):
            return self.floors[0]
        return _most_correct(self.floors, self.floor_correct, self.floor_model_correct)

    @property
    def experience_floor(self) -> float:
        """The floor of p(e | x) once conditionals are frozen (each experience's conditional keeps the
        floor it was frozen with, `frozen_floor`). Mixing p(row | x) with the uniform gives every experience
        a share of every sample, so a later experience's conditional gets a say on an earlier one's samples;
        how much share pays off is a question about the mixing over experiences, not about telling classes
        apart, and gets its own validation answers (`experience_floor_correct`, counted by the model while
        two experiences or more are known): the most correct, ties to the smallest. Before any, `floor`.
        `experience_floor_override`, while set, is a candidate being scored."""
        if self.experience_floor_override is not None:
            return self.experience_floor_override
        if not bool(self.experience_floor_correct.any()):
            return self.floor
        return _most_correct(self.floors, self.experience_floor_correct)

    # ---- inference ----------------------------------------------------------------------------------
    def modality_log_posteriors(self, feats: Features) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality: (log p_m(row | x) over the rows it has statistics for (B, R), presence (B,))."""
        return {m: ((z @ getattr(self, f"W_{m}") + getattr(self, f"b_{m}")).log_softmax(1), keep) for m, (z, keep) in feats.items()}

    def combine(self, per_modality: dict[str, tuple[torch.Tensor, torch.Tensor]], floor: float | None = None) -> torch.Tensor:
        """log p(row | x), (B, R): the product over present modalities of (1 - floor) p_m + floor / R_m,
        restricted to rows some present modality knows, and ranked first by modality match."""
        floor = self.floor if floor is None else floor
        B = next(iter(per_modality.values()))[0].shape[0]
        total = torch.zeros(B, self.n_rows, device=self.row_class.device)
        mismatch = torch.zeros_like(total)
        for m, (logp, keep) in per_modality.items():
            known = self.stats[m].seen  # (R,)
            uniform = -math.log(max(int(known.sum()), 1))
            mixed = torch.logaddexp(logp + math.log(max(1.0 - floor, 1e-12)), torch.full_like(logp, uniform + math.log(max(floor, 1e-12))))
            present = keep.unsqueeze(1).float()
            total = total + torch.where(known, mixed, torch.zeros_like(mixed)) * present
            mismatch = mismatch + (known.float().unsqueeze(0) != present).float()  # the row or the sample lacks m
        for m, stats in self.stats.items():  # modalities the batch does not hold at all
            if m not in per_modality:
                mismatch = mismatch + stats.seen.float().unsqueeze(0)
        any_known = torch.stack([self.stats[m].seen.unsqueeze(0) & keep.unsqueeze(1) for m, (_, keep) in per_modality.items()]).any(0)
        scores = torch.where(any_known, total - MODALITY_MISMATCH * mismatch, torch.full_like(total, NEG))
        return scores.log_softmax(1)

    def _classes(self, row_logp: torch.Tensor) -> torch.Tensor:
        """log p(c | x) (B, C) from log p(row | x): the sum over each class's rows."""
        C = int(self.row_class.max()) + 1
        out = torch.full((row_logp.shape[0], C), NEG, device=row_logp.device)
        for c in self.row_class.unique().tolist():
            out[:, c] = torch.logsumexp(row_logp[:, self.row_class == c], 1)
        return out

    def row_log_posterior(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.combine(self.modality_log_posteriors(self.featurize(inputs, present)))

    def frozen_conditional(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(row | x) (B, R) under the floor of p(e | x) (`experience_floor`), log p(row | x, e(row))
        (B, R) from the frozen discriminants). Frozen rows of different experiences were fitted under
        different covariances, so each modality's scores are normalised within the row's experience, mixed
        there with its frozen floor, fused over the modalities present and normalised within the experience
        again."""
        feats = self.featurize(inputs, present)
        seg, E = self.row_experience, int(self.row_experience.max()) + 1
        floor = self.frozen_floor.clamp(1e-12, 1.0 - 1e-12)  # (R,)
        total = None
        for m, (z, keep) in feats.items():
            known = self.stats[m].seen  # (R,)
            W, b = getattr(self, f"frozen_W_{m}"), getattr(self, f"frozen_b_{m}")
            scores = torch.where(known, z @ W + b, torch.full_like(b, NEG))
            logp = scores - segment_logsumexp(scores, seg, E).gather(1, seg.expand_as(scores))
            uniform = -torch.bincount(seg[known], minlength=E).clamp_min(1).float().log()[seg]  # (R,)
            mixed = torch.logaddexp(logp + torch.log1p(-floor), uniform + floor.log())
            part = torch.where(known, mixed, torch.zeros_like(mixed)) * keep.unsqueeze(1).float()
            total = part if total is None else total + part
        conditional = total - segment_logsumexp(total, seg, E).gather(1, seg.expand_as(total))
        return self.combine(self.modality_log_posteriors(feats), self.experience_floor), conditional


def _most_correct(candidates: Sequence[float], *counts: torch.Tensor) -> float:
    """The candidate with the most correct answers by the first count, then the next; ties to the smallest."""
    rank = {c: (*(float(n[k]) for n in counts), -c) for k, c in enumerate(candidates)}
    return max(candidates, key=rank.__getitem__)


def _log_trace_variance(cov: torch.Tensor, dof: float) -> float:
    """Sampling variance of log tr(cov) for a covariance estimated with `dof` degrees of freedom, Gaussian
    data: 2 tr(S^2) / (dof tr(S)^2), with tr(S^2) estimated without its bias tr(S)^2 / dof."""
    trace, square = float(torch.trace(cov)), float(cov.pow(2).sum())
    unbiased = max((square - trace**2 / dof) / (1.0 + 1.0 / dof), square / dof**2)
    return 2.0 * unbiased / (dof * trace**2)
