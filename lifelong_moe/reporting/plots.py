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


def accuracy_matrix_figure(R: np.ndarray, names: Sequence[str] | None = None) -> plt.Figure:
    """Heatmap of R[i][j] (rows: after training i; columns: test experience j); unfilled rows stay blank."""
    T = R.shape[0]
    names = list(names) if names else [str(j) for j in range(T)]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * T, 0.8 + 0.6 * T))
    im = ax.imshow(np.ma.masked_invalid(R), vmin=0, vmax=1, cmap="viridis")
    for i in range(T):
        for j in range(T):
            if np.isfinite(R[i, j]):
                ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", fontsize=8, color="w" if R[i, j] < 0.6 else "k")
    ax.set_xticks(range(T), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(T), [f"after {n}" for n in names], fontsize=8)
    ax.set_xlabel("test experience j")
    ax.set_title("accuracy R[i][j]")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def forgetting_curves_figure(R: np.ndarray, seen_acc: Sequence[float], names: Sequence[str] | None = None) -> plt.Figure:
    """Accuracy on each experience j against the training step i, plus the accuracy on all seen data."""
    T = R.shape[0]
    names = list(names) if names else [str(j) for j in range(T)]
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = np.arange(T)
    for j in range(T):
        ax.plot(steps, R[:, j], marker="o", ms=3, label=names[j])
    ax.plot(steps[: len(seen_acc)], seen_acc, "k--", lw=2, label="seen (avg)")
    ax.set_xlabel("after training experience i")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(steps)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("forgetting curves")
    fig.tight_layout()
    return fig


def comparison_figure(final: dict[str, np.ndarray], seen: dict[str, np.ndarray]) -> tuple[plt.Figure, plt.Figure]:
    """Two figures over contenders (arrays are seeds x experiences): final accuracy on each experience
    as grouped bars, and accuracy on everything seen after each experience, with one std as a band."""
    names = list(final)
    T = next(iter(final.values())).shape[1]
    fig_a, ax = plt.subplots(figsize=(1.5 + 0.9 * T, 4))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        ax.bar(np.arange(T) + (k - (len(names) - 1) / 2) * width, final[name].mean(0), width,
               yerr=final[name].std(0), label=name, capsize=2)
    ax.set_xticks(np.arange(T))
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
    ax.set_xticks(steps)
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


def save_figure(fig: plt.Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
