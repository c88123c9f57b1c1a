"""Ablation of the expert-communication layer: every mode (none, lateral, attention, shared) on the default
stream and on a domain-incremental stream whose experiences share structure, several seeds each.

    python experiments/ablate_communication.py [--seeds 3] [--modes none,lateral,attention,shared]

Writes experiments/results/communication/<stream>/comparison.{md,csv} (ACC, average incremental accuracy,
BWT, FWT, forgetting, parameters, train step time; mean ± std over seeds) and the two comparison plots.
`shared` adds one always-on shared expert per layer (`none` has none), so its parameter count is larger."""

from __future__ import annotations

import argparse
import math
import shutil
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["configs/default.yaml", "configs/domains_synthetic.yaml"])
    ap.add_argument("--modes", default="none,lateral,attention,shared")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    for path in args.configs:
        rows: dict[str, list[dict]] = {}
        root = HERE / "results" / "runs" / "communication"
        for mode in args.modes.split(","):
            for seed in range(args.seeds):
                cfg = load_config(path, [*MODE_OVERRIDES[mode], f"seed={seed}", f"output.root={root}",
                                         f"name={Path(path).stem}-{mode}", f"output.version=seed{seed}",
                                         "trainer.enable_progress_bar=false"])
                result = run(cfg, progress=lambda _: None)
                row = comparison_row(result.results, result.metrics)
                row["train_step_ms"] = step_ms(result.results, cfg)
                rows.setdefault(mode, []).append(row)
                print(f"[ablation] {Path(path).stem} {mode} seed {seed}: ACC {row['acc']:.3f} FWT {row.get('fwt', float('nan')):.3f} "
                      f"step {row['train_step_ms']:.1f} ms", flush=True)
        out = HERE / "results" / "communication" / Path(path).stem
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        write_comparison(out, rows, label="communication", timing=("train_step_ms", "train step (ms)"))
        print((out / "comparison.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
