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

import torch

from lifelong_moe import load_config, run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "domains_digits_fewshot.yaml"
TUNING = HERE / "results" / "domain_incremental" / "domains_digits" / "tuning.json"
METHODS = {  # name -> (model, strategy, extra overrides)
    "moe": ("moe", "naive", ["train.validation_fraction=0.2"]),
    "moe_scratch": ("moe", "naive", ["train.validation_fraction=0.2"]),
    "naive": ("multimodal_mlp", "naive", ["train.validation_fraction=0"]),
}
QUIET = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=1", "output.plots=false"]


def later_accuracies(method: str, shots: int, seed: int, out: Path) -> list[float]:
    """Accuracy on each later domain right after learning it, with `shots` training images per class."""
    torch.set_num_threads(1)
    saved = json.loads(TUNING.read_text())
    model, strategy, extra = METHODS[method]
    n_domains = len(load_config(CONFIG, []).stream.experiences)
    parts = [[0, i] for i in range(1, n_domains)] if method == "moe_scratch" else [list(range(n_domains))]
    accs: list[float] = []
    for keep in parts:
        name = f"{method}-{shots}shot" + (f"-domain{keep[-1]}" if method == "moe_scratch" else "")
        run_dir = out / "runs" / name / f"seed{seed}"
        if not (run_dir / "results.json").is_file() or json.loads((run_dir / "results.json").read_text()).get("status") != "complete":
            if run_dir.exists():  # an unfinished attempt: start over
                import shutil

                shutil.rmtree(run_dir)
            cfg = load_config(CONFIG, [*QUIET, f"seed={seed}", f"model.name={model}", "model.params={}", f"strategy.name={strategy}",
                                       f"train.lr={saved['lr']}", f"train.epochs={saved['epochs']}", *extra,
                                       f"output.root={out / 'runs'}", f"name={name}", f"output.version=seed{seed}"])
            for exp in cfg.stream.experiences[1:]:
                exp.train_size = 10 * shots  # ten classes
            if method == "moe_scratch":
                cfg.stream.experiences = [cfg.stream.experiences[keep[-1]]]
            run(cfg, progress=lambda _: None)
        R = json.loads((run_dir / "results.json").read_text())["accuracy_matrix"]
        accs.extend([R[0][0]] if method == "moe_scratch" else [R[i][i] for i in range(1, len(R))])
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
