"""Continual-learning metrics as pure functions of the accuracy matrix.

R[i][j] is the accuracy on test experience j after training experience i (T x T); b[j] is the accuracy of
the untrained model on experience j. Formulas (T experiences):

- ACC (final average accuracy)      = (1/T) sum_j R[T-1][j]
- average incremental accuracy      = (1/T) sum_i A_i, A_i = accuracy on everything seen after i
                                      (mean of R[i][0..i], weighted by test sizes when given)
- BWT (GEM, Lopez-Paz & Ranzato)    = (1/(T-1)) sum_{j<T-1} (R[T-1][j] - R[j][j])
- FWT (GEM)                         = (1/(T-1)) sum_{j>=1} (R[j-1][j] - b[j])
- forgetting (Chaudhry et al. 2018) f_j^k = max_{l<k} R[l][j] - R[k][j] for j < k; F_k = mean_{j<k} f_j^k
- intransigence (Chaudhry et al.)   I_k = a*_k - R[k][k], a*_k from a joint model on experiences 0..k

Avalanche's "forgetting" is first-minus-last, R[j][j] - R[T-1][j], and its BWT is minus that; those are
`first_last_forgetting` here, kept apart from the max-based forgetting above.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[Sequence[float]] | np.ndarray


def _square(R: ArrayLike) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"the accuracy matrix must be square and non-empty, got shape {R.shape}")
    return R


def final_average_accuracy(R: ArrayLike) -> float:
    R = _square(R)
    return float(R[-1].mean())


def seen_accuracy(R: ArrayLike, weights: Sequence[float] | None = None) -> list[float]:
    """A_i: accuracy over experiences 0..i after training experience i."""
    R = _square(R)
    w = np.ones(len(R)) if weights is None else np.asarray(weights, dtype=float)
    return [float(np.average(R[i, : i + 1], weights=w[: i + 1])) for i in range(len(R))]


def average_incremental_accuracy(R: ArrayLike, weights: Sequence[float] | None = None) -> float:
    return float(np.mean(seen_accuracy(R, weights)))


def backward_transfer(R: ArrayLike) -> float | None:
    R = _square(R)
    T = len(R)
    if T < 2:
        return None
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def forward_transfer(R: ArrayLike, b: Sequence[float]) -> float | None:
    R = _square(R)
    b = np.asarray(b, dtype=float)
    T = len(R)
    if T < 2:
        return None
    if b.shape != (T,):
        raise ValueError(f"b must have one entry per experience ({T}), got shape {b.shape}")
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)]))


def forgetting_matrix(R: ArrayLike) -> np.ndarray:
    """F[k][j] = max_{l<k} R[l][j] - R[k][j] for j < k, else 0 (Chaudhry et al. 2018)."""
    R = _square(R)
    T = len(R)
    F = np.zeros_like(R)
    for k in range(1, T):
        for j in range(k):
            F[k, j] = R[:k, j].max() - R[k, j]
    return F


def forgetting_per_experience(R: ArrayLike) -> list[float]:
    """Final forgetting f_j^{T-1} of each experience j < T-1."""
    F = forgetting_matrix(R)
    return [float(v) for v in F[-1, :-1]]


def average_forgetting(R: ArrayLike, k: int | None = None) -> float | None:
    """F_k: mean forgetting over j < k after training experience k (default: the last)."""
    F = forgetting_matrix(R)
    k = len(F) - 1 if k is None else k
    if k < 1:
        return None
    return float(F[k, :k].mean())


def first_last_forgetting(R: ArrayLike) -> list[float]:
    """Avalanche's forgetting: R[j][j] - R[T-1][j] for each j < T-1."""
    R = _square(R)
    return [float(R[j, j] - R[-1, j]) for j in range(len(R) - 1)]


def intransigence(R: ArrayLike, reference_diagonal: Sequence[float]) -> list[float]:
    """I_k = a*_k - R[k][k], a*_k = reference_diagonal[k] from a joint model trained on 0..k."""
    R = _square(R)
    ref = np.asarray(reference_diagonal, dtype=float)
    if ref.shape != (len(R),):
        raise ValueError(f"the reference needs one accuracy per experience ({len(R)}), got {ref.shape}")
    return [float(ref[k] - R[k, k]) for k in range(len(R))]


def summarize(
    R: ArrayLike,
    b: Sequence[float] | None = None,
    weights: Sequence[float] | None = None,
    reference_diagonal: Sequence[float] | None = None,
) -> dict[str, object]:
    """Every stream metric of R, as stored in results.json."""
    R = _square(R)
    out: dict[str, object] = {
        "acc": final_average_accuracy(R),
        "avg_incremental_acc": average_incremental_accuracy(R, weights),
        "seen_acc": seen_accuracy(R, weights),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, b) if b is not None else None,
        "forgetting": average_forgetting(R),
        "forgetting_per_experience": forgetting_per_experience(R),
        "forgetting_curve": [average_forgetting(R, k) for k in range(len(R))],
        "first_last_forgetting": first_last_forgetting(R),
    }
    if reference_diagonal is not None:
        inn = intransigence(R, reference_diagonal)
        out["intransigence_per_experience"] = inn
        out["intransigence"] = float(np.mean(inn))
    return out


def prefix_metrics(R: ArrayLike, step: int, b: Sequence[float] | None = None) -> dict[str, float | None]:
    """ACC, BWT and FWT of the stream truncated after experience `step` (for per-step curves)."""
    R = _square(R)
    sub = R[: step + 1, : step + 1]
    return {
        "acc": final_average_accuracy(sub),
        "bwt": backward_transfer(sub),
        "fwt": forward_transfer(sub, np.asarray(b)[: step + 1]) if b is not None else None,
        "forgetting": average_forgetting(sub),
    }


def contributions(rows: dict[str, list[list[float]]], R: ArrayLike) -> dict[str, dict[str, object]]:
    """Per part of a model, from its accuracy on every test experience after each experience (`rows[part]`,
    one row per step, like R): its accuracy matrix, ACC and BWT; `model` is the whole model's R."""
    out: dict[str, dict[str, object]] = {}
    for name, part in {**rows, "model": _square(R).tolist()}.items():
        P = _square(part)
        out[name] = {"acc": final_average_accuracy(P), "bwt": backward_transfer(P), "accuracy_matrix": P.tolist()}
    return out
