"""Ablation of the expert-communication layer: every mode (none, lateral, attention, shared) on the default
stream and on a domain-incremental stream whose experiences share structure, several seeds each.

    python experiments/ablate_communication.py [--seeds 3] [--modes none,lateral,attention,shared]
        [--configs configs/default.yaml configs/domains_synthetic.yaml configs/domains_digits_fewshot.yaml]

Writes experiments/results/communication/<stream>/comparison.{md,csv} (ACC, average incremental accuracy,
BWT, FWT, forgetting, parameters, train step time; mean ± std over seeds) and the two comparison plots.
`shared` adds one always-on shared expert per layer (`none` has none), so its parameter count is larger.

Transfer gain, per mode: the accuracy on each new experience right after learning it (R[i][i], i >= 1) minus
that of the same model trained from scratch on that experience alone (same config, seed and epochs), averaged
over the experiences; `transfer.md` holds it next to FWT (as in GEM) for every mode."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
from pathlib import Path

from lifelong_moe import load_config, run
from lifelong_moe.compare import comparison_row, write_comparison

HERE = Path(__file__).resolve().parent
MODE_OVERRIDES = {
    "none": [],
    "lateral": ["model.params.communication=lateral"],
    "attention": ["model.params.communication=attention"],
    "shared": ["model.params.communication=shared", "model.params.n_shared_experts=1"],
}


def step_ms(results: dict, cfg) -> float:
    """Mean wall time of one training step over the stream (training time / optimizer steps)."""
    steps = sum(cfg.train.epochs * math.ceil(e["n_train"] / cfg.train.batch_size) for e in results["experiences"])
    return 1000 * sum(t["train_s"] for t in results["time_per_experience_s"]) / steps


def scratch_accuracies(path: str, seed: int, root: Path) -> list[float]:
    """Accuracy of the model trained from scratch on experience i alone, for every i >= 1."""
    accs = []
    T = len(load_config(path, []).stream.experiences)
    for i in range(1, T):
        cfg = load_config(path, [f"seed={seed}", f"output.root={root}", f"name={Path(path).stem}-scratch{i}",
                                 f"output.version=seed{seed}", "trainer.enable_progress_bar=false"])
        cfg.stream.experiences = [cfg.stream.experiences[i]]
        accs.append(float(run(cfg, progress=lambda _: None).accuracy_matrix[0][0]))
    return accs


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def transfer_table(gains: dict[str, list[float]], fwt: dict[str, list[float]]) -> str:
    md = ["| mode | transfer gain vs scratch | FWT |", "|---|---|---|"]
    for mode in gains:
        g, f = gains[mode], fwt[mode]
        md.append(f"| {mode} | {statistics.fmean(g):+.3f} ± {_sd(g):.3f} | {statistics.fmean(f):+.3f} ± {_sd(f):.3f} |")
    return "\n".join([*md, "", "Mean ± std over seeds; the gain is averaged over experiences 1..T-1."]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["configs/default.yaml", "configs/domains_synthetic.yaml",
                                                      "configs/domains_digits_fewshot.yaml"])
    ap.add_argument("--modes", default="none,lateral,attention,shared")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    for path in args.configs:
        rows: dict[str, list[dict]] = {}
        gains: dict[str, list[float]] = {}
        fwt: dict[str, list[float]] = {}
        root = HERE / "results" / "runs" / "communication"
        scratch = {seed: scratch_accuracies(path, seed, root) for seed in range(args.seeds)}
        for mode in args.modes.split(","):
            for seed in range(args.seeds):
                cfg = load_config(path, [*MODE_OVERRIDES[mode], f"seed={seed}", f"output.root={root}",
                                         f"name={Path(path).stem}-{mode}", f"output.version=seed{seed}",
                                         "trainer.enable_progress_bar=false"])
                result = run(cfg, progress=lambda _: None)
                row = comparison_row(result.results, result.metrics)
                row["train_step_ms"] = step_ms(result.results, cfg)
                rows.setdefault(mode, []).append(row)
                R = result.accuracy_matrix
                gains.setdefault(mode, []).append(statistics.fmean(R[i][i] - scratch[seed][i - 1] for i in range(1, len(R))))
                fwt.setdefault(mode, []).append(float(result.metrics.get("fwt") or 0.0))
                print(f"[ablation] {Path(path).stem} {mode} seed {seed}: ACC {row['acc']:.3f} FWT {row.get('fwt', float('nan')):.3f} "
                      f"step {row['train_step_ms']:.1f} ms", flush=True)
        out = HERE / "results" / "communication" / Path(path).stem
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        write_comparison(out, rows, label="communication", timing=("train_step_ms", "train step (ms)"))
        (out / "transfer.md").write_text(transfer_table(gains, fwt))
        (out / "scratch.json").write_text(json.dumps(scratch, indent=1))
        print((out / "comparison.md").read_text() + (out / "transfer.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
