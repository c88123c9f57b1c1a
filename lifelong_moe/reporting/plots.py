"""PNG figures of a run: the accuracy-matrix heatmap and the forgetting curves."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lifelong_moe.reporting.files import atomic_write_bytes


def accuracy_matrix_figure(R: np.ndarray, names: Sequence[str] | None = None, title: str = "accuracy R[i][j]") -> plt.Figure:
    """Heatmap of R[i][j] (rows: after training i; columns: test experience j); unfilled rows stay blank."""
    T = R.shape[0]
    names = list(names) if names else [str(j) for j in range(T)]
    room = 0.065 * max(len(n) for n in names)  # inches the tick labels take
    fig, ax = plt.subplots(figsize=(max(4.0, 2.0 + 0.7 * T + room), max(3.2, 1.4 + 0.6 * T + room)))
    im = ax.imshow(np.ma.masked_invalid(R), vmin=0, vmax=1, cmap="viridis")
    for i in range(T):
        for j in range(T):
            if np.isfinite(R[i, j]):
                ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", fontsize=8, color="w" if R[i, j] < 0.6 else "k")
    ax.set_xticks(range(T), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(T), [f"after {n}" for n in names], fontsize=8)
    ax.set_xlabel("test experience j")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def forgetting_curves_figure(R: np.ndarray, seen_acc: Sequence[float], names: Sequence[str] | None = None) -> plt.Figure:
    """Accuracy on each experience j against the training step i (from i = j on), plus the accuracy on all seen data."""
    T = R.shape[0]
    names = list(names) if names else [str(j) for j in range(T)]
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = np.arange(T)
    for j in range(T):  # from the step that trained j on: before it, j's classes are unknown, not forgotten
        ax.plot(steps[j:], R[j:, j], marker="o", ms=3, label=names[j])
    ax.plot(steps[: len(seen_acc)], seen_acc, "k--", lw=2, label="seen (avg)")
    ax.set_xlabel("after training experience i")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(steps)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("forgetting curves")
    fig.tight_layout()
    return fig


def comparison_figure(final: dict[str, np.ndarray], seen: dict[str, np.ndarray],
                      experiences: Sequence[str] | None = None) -> tuple[plt.Figure, plt.Figure]:
    """Two figures over contenders (arrays are seeds x experiences): final accuracy on each experience
    as grouped bars, and accuracy on everything seen after each experience, with one std as a band.
    `experiences`: their names for the x axes (default: their indices)."""
    names = list(final)
    T = next(iter(final.values())).shape[1]
    ticks = list(experiences) if experiences else [str(t) for t in range(T)]
    tilt = {"rotation": 30, "ha": "right"} if experiences else {}
    fig_a, ax = plt.subplots(figsize=(1.5 + 0.9 * T, 4))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        ax.bar(np.arange(T) + (k - (len(names) - 1) / 2) * width, final[name].mean(0), width,
               yerr=final[name].std(0), label=name, capsize=2)
    ax.set_xticks(np.arange(T), ticks, fontsize=8, **tilt)
    ax.set_xlabel("test experience")
    ax.set_ylabel("accuracy after the last experience")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("final accuracy per experience")
    fig_a.tight_layout()

    fig_b, ax = plt.subplots(figsize=(6, 4))
    steps = np.arange(T)
    for name in names:
        mean, std = seen[name].mean(0), seen[name].std(0)
        ax.plot(steps, mean, marker="o", ms=3, label=name)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xticks(steps, ticks, fontsize=8, **tilt)
    ax.set_xlabel("after training experience i")
    ax.set_ylabel("accuracy on experiences seen so far")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("ACC over the stream")
    fig_b.tight_layout()
    return fig_a, fig_b


def modality_robustness_figure(robustness: dict) -> plt.Figure:
    """Accuracy with each subset of modalities (bars) and against the missing rate (line)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    subsets = {k: v["accuracy"] for k, v in robustness.get("subsets", {}).items() if v["accuracy"] is not None}
    ax = axes[0]
    ax.bar(range(len(subsets)), list(subsets.values()))
    ax.set_xticks(range(len(subsets)))
    ax.set_xticklabels(list(subsets), rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("test accuracy")
    ax.set_title("modalities kept")
    rates = sorted((float(r), v["accuracy"]) for r, v in robustness.get("missing_rate", {}).items() if v["accuracy"] is not None)
    ax = axes[1]
    if rates:
        ax.plot([100 * r for r, _ in rates], [a for _, a in rates], marker="o")
    ax.set_xlabel("missing rate per modality (%)")
    ax.set_ylim(0, 1.02)
    ax.set_title("accuracy against missing rate")
    fig.tight_layout()
    return fig


def routing_mass_figure(report: dict, names: Sequence[str]) -> plt.Figure:
    """Left: share of each test experience's gate mass per expert (rows sum to 1), with expert owners on the
    x axis. Right: the same per modality, over all test experiences."""
    mass = np.asarray(report["routing_mass"], dtype=float)  # (J, M, E)
    owner = report["expert_owner"]
    by_exp = mass.sum(1)
    by_exp = by_exp / np.maximum(by_exp.sum(1, keepdims=True), 1e-12)
    by_mod = mass.sum(0)
    by_mod = by_mod / np.maximum(by_mod.sum(1, keepdims=True), 1e-12)
    E = mass.shape[2]
    fig, axes = plt.subplots(1, 2, figsize=(2 + 0.35 * E * 2, 1.5 + 0.35 * len(names)), squeeze=False)
    for ax, data, rows, title in (
        (axes[0, 0], by_exp, [f"test {n}" for n in names], "routing mass per test experience"),
        (axes[0, 1], by_mod, report["modalities"], "routing mass per modality"),
    ):
        im = ax.imshow(data, vmin=0, vmax=1, cmap="magma", aspect="auto")
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_xticks(range(E), [f"{i}:g{g}" for i, g in enumerate(owner)], rotation=90, fontsize=6)
        ax.set_xlabel("expert:owner group", fontsize=7)
        ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=axes[0, 1], fraction=0.046)
    fig.tight_layout()
    return fig


def experience_labels(names: Sequence[str], classes: Sequence[Sequence[str]], width: int = 32) -> list[str]:
    """Experience names with their classes' names (`exp0: barbera, nebbiolo`), cut to `width` characters;
    the names alone where every class name is its label."""
    if all(n.isdigit() for group in classes for n in group):
        return list(names)
    out = []
    for name, group in zip(names, classes):
        text = f"{name}: {', '.join(group)}"
        out.append(text if len(text) <= width else text[: width - 1] + "…")
    return out


def confusion_matrix_figure(confusion: np.ndarray, names: Sequence[str], title: str = "confusion matrix") -> plt.Figure:
    """Rows: true class, columns: predicted class, each row as shares of its samples (counts written in cells
    when there are few classes). Classes with neither test samples nor predictions are left out."""
    C = np.asarray(confusion, dtype=float)
    keep = np.flatnonzero((C.sum(1) > 0) | (C.sum(0) > 0))
    C = C[np.ix_(keep, keep)]
    labels = [names[k] for k in keep]
    share = C / np.maximum(C.sum(1, keepdims=True), 1)
    n = len(keep)
    fig, ax = plt.subplots(figsize=(2.0 + 0.38 * n, 1.6 + 0.34 * n))
    im = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if C[i, j]:
                    ax.text(j, i, f"{int(C[i, j])}", ha="center", va="center", fontsize=7, color="w" if share[i, j] > 0.6 else "k")
    ticks = range(n) if n <= 60 else range(0, n, max(1, n // 30))
    ax.set_xticks(list(ticks), [labels[k] for k in ticks], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(list(ticks), [labels[k] for k in ticks], fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return fig


def class_accuracy_figure(per_step: Sequence[Sequence[float | None]], names: Sequence[str],
                          steps: Sequence[str] | None = None) -> plt.Figure:
    """Accuracy of each class (columns, by name) after each training step (rows); blank where the class has no
    test samples."""
    A = np.array([[np.nan if v is None else v for v in row] for row in per_step], dtype=float)
    keep = np.flatnonzero(np.isfinite(A).any(0))
    A = A[:, keep]
    labels = [names[k] for k in keep]
    steps = list(steps) if steps else [str(i) for i in range(len(A))]
    fig, ax = plt.subplots(figsize=(2.0 + 0.3 * len(keep), 1.2 + 0.35 * len(A)))
    im = ax.imshow(np.ma.masked_invalid(A), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ticks = range(len(keep)) if len(keep) <= 60 else range(0, len(keep), max(1, len(keep) // 30))
    ax.set_xticks(list(ticks), [labels[k] for k in ticks], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(A)), [f"after {s}" for s in steps], fontsize=7)
    ax.set_title("accuracy per class")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def figure_png(fig: plt.Figure) -> bytes:
    """The figure as PNG bytes (120 dpi); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig: plt.Figure, path: Path) -> None:
    atomic_write_bytes(path, figure_png(fig))
