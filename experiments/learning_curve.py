"""Learning curves for transfer across domains: accuracy on a new domain against the number of its training
samples per class, for the lifelong MoE that learned the earlier domains first, the same MoE trained from
scratch on that domain alone, and a dense backbone fine-tuned through the stream (naive). The stream is
configs/domains_digits_fewshot.yaml (plain digits in full, then rotated, inverted and noisy digits with
`--shots` images per class each); the accuracy of each later domain is read right after it is learned
(R[i][i]), averaged over the three later domains. lr and epochs are the digits backbone's, chosen on
validation splits (experiments/results/domain_incremental/domains_digits/tuning.json) and used by every method.

    python experiments/learning_curve.py [--seeds 3] [--shots 5,10,25,50] [--jobs 2]
        [--out experiments/results/learning_curve]

Writes learning_curve.{md,json,png} under --out; runs already complete are read back."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from class_incremental import METHODS as STUDY_METHODS
from class_incremental import read_back_or_run, study_overrides

from lifelong_moe import load_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "domains_digits_fewshot.yaml"
TUNING = HERE / "results" / "domain_incremental" / "domains_digits" / "tuning.json"
METHODS = {"moe": STUDY_METHODS["moe"], "moe_scratch": STUDY_METHODS["moe"], "naive": STUDY_METHODS["naive"]}


def later_accuracies(method: str, shots: int, seed: int, out: Path) -> list[float]:
    """Accuracy on each later domain right after learning it, with `shots` training images per class."""
    torch.set_num_threads(1)
    saved = json.loads(TUNING.read_text())
    n_domains = len(load_config(CONFIG, []).stream.experiences)
    domains = range(1, n_domains) if method == "moe_scratch" else [None]  # scratch: one run per later domain
    accs: list[float] = []
    for domain in domains:
        name = f"{method}-{shots}shot" + (f"-domain{domain}" if domain is not None else "")

        def config(name: str = name, domain: int | None = domain) -> Any:
            cfg = load_config(CONFIG, study_overrides(METHODS[method], seed, saved["lr"], saved["epochs"], out / "runs", name))
            for exp in cfg.stream.experiences[1:]:
                exp.train_size = 10 * shots  # ten classes
            if domain is not None:
                cfg.stream.experiences = [cfg.stream.experiences[domain]]
            return cfg

        R = read_back_or_run(out / "runs" / name / f"seed{seed}", config)["accuracy_matrix"]
        accs.extend([R[0][0]] if domain is not None else [R[i][i] for i in range(1, len(R))])
    return accs


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shots", default="5,10,25,50")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side, one core each")
    ap.add_argument("--out", default=str(HERE / "results" / "learning_curve"))
    args = ap.parse_args()
    shots = [int(s) for s in args.shots.split(",") if s]
    out = Path(args.out)
    tasks = [(m, n, k) for n in shots for m in METHODS for k in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(later_accuracies, m, n, k, out) for m, n, k in tasks]
        results = {task: future.result() for task, future in zip(tasks, futures, strict=True)}
    per_seed = {m: {n: [statistics.fmean(results[m, n, k]) for k in range(args.seeds)] for n in shots} for m in METHODS}
    md = ["| images per class | " + " | ".join(METHODS) + " | MoE gain vs scratch |", "|---|" + "---|" * (len(METHODS) + 1)]
    for n in shots:
        gain = [a - b for a, b in zip(per_seed["moe"][n], per_seed["moe_scratch"][n], strict=True)]
        md.append(f"| {n} | " + " | ".join(_mean_sd(per_seed[m][n]) for m in METHODS) + f" | {_mean_sd(gain)} |")
    md.append("")
    md.append(f"Accuracy on each later domain right after learning it, averaged over the three later domains; mean ± std over {args.seeds} seeds.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "learning_curve.md").write_text("\n".join(md) + "\n")
    (out / "learning_curve.json").write_text(json.dumps({m: {str(n): v for n, v in per_seed[m].items()} for m in METHODS}, indent=1))
    _plot(per_seed, shots, out / "learning_curve.png")
    print("\n".join(md))
    return 0


def _plot(per_seed: dict[str, dict[int, list[float]]], shots: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, curve in per_seed.items():
        means = [statistics.fmean(curve[n]) for n in shots]
        sds = [statistics.stdev(curve[n]) if len(curve[n]) > 1 else 0.0 for n in shots]
        ax.errorbar(shots, means, yerr=sds, marker="o", capsize=3, label=m)
    ax.set(xscale="log", xlabel="training images per class (new domain)", ylabel="accuracy on the new domain",
           title="domains_digits_fewshot: transfer")
    ax.set_xticks(shots, [str(n) for n in shots])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
