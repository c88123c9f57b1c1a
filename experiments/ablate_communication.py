"""Ablation of the expert-communication layer: every mode (none, lateral, attention, pnn, shared, and shared
with a drift bound) on the default stream and on domain-incremental streams whose experiences share
structure, several seeds each.

    python experiments/ablate_communication.py [--seeds 3] [--modes none,lateral,attention,pnn,shared,shared_bounded]
        [--configs configs/default.yaml configs/domains_synthetic.yaml configs/domains_digits_fewshot.yaml]
        [--experts-only] [--set KEY=VALUE ... --tag NAME]

Writes experiments/results/communication/<stream>/comparison.{md,csv} (ACC, average incremental accuracy,
BWT, FWT, forgetting, parameters, train step time; mean ± std over seeds) and the two comparison plots.
`shared` adds one always-on shared expert per layer (`none` has none), so its parameter count is larger;
`shared_bounded` replaces the L2 anchor by a hard bound: each shared expert stays within a relative distance
of 0.05 of its first-experience values (fixed beforehand, not tuned; with the anchor at its default weight
the shared experts drift about 0.02 and a 0.05 bound would never act). Finished runs are read back from
experiments/results/runs/communication/, so a re-run only trains what is missing.

`--experts-only` runs everything (scratch models included) with the expert weight w fixed at 1: the routed
experience's prediction is its experts' head alone, so the table shows what communication does to the experts'
own path, which the statistics otherwise share with every mode; written to `<stream>-experts_only/`.
`--set` adds config overrides to every run (e.g. `model.params.encoder_training=per_group`), written to
`<stream>-<tag>/`.

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
from typing import Any

from class_incremental import read_back_or_run

from lifelong_moe import load_config
from lifelong_moe.compare import comparison_row, write_comparison

HERE = Path(__file__).resolve().parent
MODE_OVERRIDES = {
    "none": [],
    "lateral": ["model.params.communication=lateral"],
    "attention": ["model.params.communication=attention"],
    "pnn": ["model.params.communication=pnn"],
    "shared": ["model.params.communication=shared"],
    "shared_bounded": ["model.params.communication=shared", "model.params.shared.anchor=0.0", "model.params.shared.drift_bound=0.05"],
}
EXPERTS_ONLY = ["model.params.expert_weights=[1.0]"]


def run_or_read(overrides: list[str], path: str, root: Path, name: str, seed: int, only: int | None = None) -> tuple[dict, Any]:
    """(results.json content, config) of one run, read back if it finished before; `only`: keep just that
    experience of the stream."""
    cfg = load_config(path, [*overrides, f"seed={seed}", f"output.root={root}", f"name={name}",
                             f"output.version=seed{seed}", "trainer.enable_progress_bar=false"])
    if only is not None:
        cfg.stream.experiences = [cfg.stream.experiences[only]]
    return read_back_or_run(root / name / f"seed{seed}", lambda: cfg), cfg


def step_ms(results: dict, cfg) -> float:
    """Mean wall time of one training step over the stream (training time / optimizer steps)."""
    steps = sum(cfg.train.epochs * math.ceil(e["n_train"] / cfg.train.batch_size) for e in results["experiences"])
    return 1000 * sum(t["train_s"] for t in results["time_per_experience_s"]) / steps


def scratch_accuracies(path: str, seed: int, root: Path, extra: list[str], tag: str) -> list[float]:
    """Accuracy of the model trained from scratch on experience i alone, for every i >= 1."""
    accs = []
    T = len(load_config(path, []).stream.experiences)
    for i in range(1, T):
        results, _ = run_or_read(extra, path, root, f"{Path(path).stem}{tag}-scratch{i}", seed, only=i)
        accs.append(float(results["accuracy_matrix"][0][0]))
    return accs


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def transfer_table(gains: dict[str, list[list[float]]], fwt: dict[str, list[float]]) -> str:
    """Per mode: the gain averaged over experiences 1..T-1, then per experience; FWT. Mean ± std over seeds."""
    n_exp = len(next(iter(gains.values()))[0])
    md = ["| mode | transfer gain vs scratch | " + " | ".join(f"gain exp {i}" for i in range(1, n_exp + 1)) + " | FWT |",
          "|---|---|" + "---|" * n_exp + "---|"]
    for mode, per_seed in gains.items():
        mean_gain = [statistics.fmean(g) for g in per_seed]
        cells = [f"{statistics.fmean(col):+.3f} ± {_sd(list(col)):.3f}" for col in zip(*per_seed, strict=True)]
        f = fwt[mode]
        md.append(f"| {mode} | {statistics.fmean(mean_gain):+.3f} ± {_sd(mean_gain):.3f} | " + " | ".join(cells)
                  + f" | {statistics.fmean(f):+.3f} ± {_sd(f):.3f} |")
    return "\n".join([*md, "", "Mean ± std over seeds; gain = R[i][i] - the same model trained on experience i alone."]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["configs/default.yaml", "configs/domains_synthetic.yaml",
                                                      "configs/domains_digits_fewshot.yaml"])
    ap.add_argument("--modes", default=",".join(MODE_OVERRIDES))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--experts-only", action="store_true", help="fix the expert weight w at 1 (see above)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every run (needs --tag)")
    ap.add_argument("--tag", default="", help="names the runs and the output folder of a --set variant")
    args = ap.parse_args()
    if bool(args.set) != bool(args.tag):
        ap.error("--set and --tag go together")
    extra, tag = (EXPERTS_ONLY, "-experts_only") if args.experts_only else ([], "")
    extra, tag = [*extra, *args.set], tag + (f"-{args.tag}" if args.tag else "")
    for path in args.configs:
        rows: dict[str, list[dict]] = {}
        gains: dict[str, list[list[float]]] = {}
        fwt: dict[str, list[float]] = {}
        root = HERE / "results" / "runs" / "communication"
        scratch = {seed: scratch_accuracies(path, seed, root, extra, tag) for seed in range(args.seeds)}
        for mode in args.modes.split(","):
            for seed in range(args.seeds):
                results, cfg = run_or_read([*MODE_OVERRIDES[mode], *extra], path, root, f"{Path(path).stem}{tag}-{mode}", seed)
                row = comparison_row(results, results["metrics"])
                row["train_step_ms"] = step_ms(results, cfg)
                rows.setdefault(mode, []).append(row)
                R = results["accuracy_matrix"]
                if scratch[seed]:  # streams listed experience by experience (not a `split:`)
                    gains.setdefault(mode, []).append([R[i][i] - scratch[seed][i - 1] for i in range(1, len(R))])
                fwt.setdefault(mode, []).append(float(results["metrics"].get("fwt") or 0.0))
                print(f"[ablation] {Path(path).stem} {mode} seed {seed}: ACC {row['acc']:.3f} FWT {row.get('fwt', float('nan')):.3f} "
                      f"step {row['train_step_ms']:.1f} ms", flush=True)
        out = HERE / "results" / "communication" / f"{Path(path).stem}{tag}"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        write_comparison(out, rows, label="communication", timing=("train_step_ms", "train step (ms)"))
        if gains:
            (out / "transfer.md").write_text(transfer_table(gains, fwt))
            (out / "scratch.json").write_text(json.dumps(scratch, indent=1))
        print((out / "comparison.md").read_text() + ((out / "transfer.md").read_text() if gains else ""), flush=True)


if __name__ == "__main__":
    main()
