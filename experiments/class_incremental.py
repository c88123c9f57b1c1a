"""Class-incremental learning without task labels: the MoE and the class-statistics model alone (`stats`)
against naive fine-tuning, replay, ER-ACE, DER, GEM and joint training, on every
built-in class-incremental stream, seeds 0..n-1. Writes, per stream, comparison.{md,csv} and plots, the
tuning record and the MoE's routing accuracy per experience; and one summary table and plot over streams.

    python experiments/class_incremental.py [--seeds 3] [--streams split_digits,split_mnist1d,default,synthetic_10x2,synthetic_20x2]
        [--methods moe,stats,naive,replay,er_ace,der,gem,joint] [--out experiments/results/class_incremental] [--jobs 1]

Runs that finished are read back from their results.json, so an interrupted study continues where it stopped.

Protocol (nothing is chosen on test data):
- Every baseline trains the dense backbone `multimodal_mlp` (a CNN per image, a 1-D CNN per signal). Its
  learning rate and epochs come from `lifelong_moe.tuning.tune_joint`: the backbone trained jointly on all
  training splits, scored after every epoch on 20% validation splits carved from them (seed 0), for lr in
  {1e-3, 3e-3, 1e-2}. Baselines then train on the whole training splits with those settings.
- The MoE uses the same lr and epochs; it holds 20% of each experience's training data out as its own
  validation split (shrinkage, floor and expert weight are chosen there), and adds it to its statistics
  once the choice is made; `stats` likewise (shrinkage and floor). Both keep the config's own model params.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong_moe import load_config, run
from lifelong_moe.compare import comparison_row, human_bytes, write_comparison
from lifelong_moe.config import ComponentConfig
from lifelong_moe.tuning import tune_joint

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STREAMS = {
    "split_digits": "configs/split_digits.yaml",
    "split_mnist1d": "configs/split_mnist1d.yaml",
    "default": "configs/default.yaml",
    "synthetic_10x2": "configs/synthetic_10x2.yaml",
    "synthetic_20x2": "configs/synthetic_20x2.yaml",
}
METHODS = {  # name -> (model, strategy, extra overrides)
    "moe": ("moe", "naive", ["train.validation_fraction=0.2"]),
    "stats": ("stats", "naive", ["train.validation_fraction=0.2"]),
    "naive": ("multimodal_mlp", "naive", []),
    "replay": ("multimodal_mlp", "replay", []),
    "er_ace": ("multimodal_mlp", "er_ace", []),
    "der": ("multimodal_mlp", "der", []),
    "gem": ("multimodal_mlp", "gem", []),
    "joint": ("multimodal_mlp", "cumulative", []),
}
QUIET = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=1", "output.plots=false"]


def tuned(config: str, out: Path) -> tuple[float, int]:
    """(lr, epochs) for the stream's backbone, from a saved tuning record or a new one."""
    record = out / "tuning.json"
    if not record.is_file():
        out.mkdir(parents=True, exist_ok=True)
        cfg = load_config(ROOT / config, [*QUIET, "train.validation_fraction=0.2", "seed=0"])
        result = tune_joint(cfg, ComponentConfig(name="multimodal_mlp"), progress=lambda s: print(s, flush=True))
        record.write_text(json.dumps({"lr": result.lr, "epochs": result.epochs, "validation_accuracy": result.validation_accuracy,
                                      "curves": {str(k): v for k, v in result.curves.items()}}, indent=1))
    saved = json.loads(record.read_text())
    return saved["lr"], saved["epochs"]


def study_overrides(spec: tuple[str, str, list[str]], seed: int, lr: float, epochs: int, root: Path, name: str,
                    config_model: str = "moe") -> list[str]:
    """The overrides of one study run, `spec` = (model, strategy, extra overrides): a quiet CPU trainer, the
    method's model and strategy (with the config's params if it is the config's own model, `config_model`),
    the backbone's lr and epochs, the run written to root/name/seed<seed>."""
    model, strategy, extra = spec
    params = [] if model == config_model else ["model.params={}"]
    return [*QUIET, f"seed={seed}", f"model.name={model}", *params, f"strategy.name={strategy}",
            f"train.lr={lr}", f"train.epochs={epochs}", "train.validation_fraction=0", *extra,
            f"output.root={root}", f"name={name}", f"output.version=seed{seed}"]


def read_back_or_run(run_dir: Path, make_config: Callable[[], Any]) -> dict:
    """The results.json content of the complete run in `run_dir`, or of a new run of `make_config()` there
    (an unfinished attempt is removed first)."""
    if (run_dir / "results.json").is_file():
        saved = json.loads((run_dir / "results.json").read_text())
        if saved.get("status") == "complete":
            return saved
    cfg = make_config()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return run(cfg, progress=lambda _: None).results


def one_run(config: str, method: str, seed: int, out: Path, spec: tuple[str, str, list[str]]) -> dict:
    """One (stream, method, seed), `spec` = (model, strategy, overrides): its results.json content (read
    back if it already exists)."""
    torch.set_num_threads(1)  # many runs side by side, one core each
    return read_back_or_run(out / "runs" / method / f"seed{seed}",
                            lambda: load_config(ROOT / config, study_overrides(spec, seed, *tuned(config, out), out / "runs", method)))


def run_all(streams: dict[str, str], methods: list[str], seeds: int, out: Path, jobs: int) -> dict[str, dict[str, list[dict]]]:
    """Tune every stream (name -> config path), then run every (stream, method, seed), `jobs` processes at a time."""
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for stream, (lr, epochs) in zip(streams, pool.map(tuned, list(streams.values()), [out / s for s in streams]), strict=True):
            print(f"[{stream}] backbone lr {lr:g}, {epochs} epochs (chosen on validation)", flush=True)
        tasks = [(s, m, k) for s in streams for m in methods for k in range(seeds)]
        futures = {pool.submit(one_run, streams[s], m, k, out / s, METHODS[m]): (s, m, k) for s, m, k in tasks}
        done: dict[tuple[str, str, int], dict] = {}
        for future in as_completed(futures):
            key = futures[future]
            try:
                done[key] = future.result()
            except Exception as err:  # one failed run must not lose the others
                print(f"[{key[0]}] {key[1]} seed {key[2]}: FAILED ({type(err).__name__}: {err})", flush=True)
                continue
            print(f"[{key[0]}] {key[1]} seed {key[2]}: ACC {done[key]['metrics']['acc']:.3f}", flush=True)
    all_rows: dict[str, dict[str, list[dict]]] = {}
    for s in streams:
        rows, routing = {}, {}
        for m in methods:
            for k in range(seeds):
                if (s, m, k) not in done:
                    continue
                results = done[(s, m, k)]
                rows.setdefault(m, []).append(comparison_row(results, results["metrics"]))
                if "routing_accuracy" in results["evaluations"][-1]:
                    routing.setdefault(m, []).append(results["evaluations"][-1]["routing_accuracy"])
        if rows:
            write_comparison(out / s, rows)
        (out / s / "routing_accuracy.json").write_text(json.dumps(routing, indent=1))
        all_rows[s] = rows
    return all_rows


def summary(all_rows: dict[str, dict[str, list[dict]]], out: Path, title: str = "class-incremental, no task labels") -> None:
    """One table: ACC mean ± std per stream and method, the stored bytes beside it."""
    methods = list(dict.fromkeys(m for rows in all_rows.values() for m in rows))
    md = ["| stream | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for stream, rows in all_rows.items():
        cells = []
        for m in methods:
            accs = [r["acc"] for r in rows.get(m, [])]
            if not accs:
                cells.append("—")
                continue
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{statistics.fmean(accs):.3f} ± {sd:.3f} ({human_bytes(rows[m][0].get('memory_bytes', 0))})")
        md.append(f"| {stream} | " + " | ".join(cells) + " |")
    md += ["", "Final average accuracy (ACC), mean ± std over seeds; in brackets what each method keeps of past "
           "data after the last experience (stored samples or statistics)."]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    _summary_plot(all_rows, methods, out / "summary.png", title)
    print("\n".join(md))


def _summary_plot(all_rows: dict[str, dict[str, list[dict]]], methods: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = list(all_rows)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(streams), 4))
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        means = [np.mean([r["acc"] for r in all_rows[s].get(m, [])]) if all_rows[s].get(m) else 0 for s in streams]
        sds = [np.std([r["acc"] for r in all_rows[s].get(m, [])], ddof=1) if len(all_rows[s].get(m, [])) > 1 else 0 for s in streams]
        ax.bar(np.arange(len(streams)) + (k - (len(methods) - 1) / 2) * width, means, width, yerr=sds, label=m, capsize=2)
    ax.set_xticks(np.arange(len(streams)), streams, rotation=15, fontsize=8)
    ax.set_ylabel("ACC after the last experience")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=4)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def study(doc: str, streams: dict[str, str], methods: list[str], out: Path, title: str) -> tuple[list[str], list[str], Path, int] | None:
    """Parse a study's command line, run it and write its summary; (streams, methods, out, seeds) that
    ran, or None after printing why the command line was refused."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--streams", default=",".join(streams))
    ap.add_argument("--methods", default=",".join(methods))
    ap.add_argument("--out", default=str(out))
    ap.add_argument("--jobs", type=int, default=1, help="runs side by side, one core each")
    args = ap.parse_args()
    chosen = [s for s in args.streams.split(",") if s]
    ran = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(chosen) - set(streams)) + sorted(set(ran) - set(METHODS))
    if unknown:
        print(f"unknown stream or method: {unknown}", file=sys.stderr)
        return None
    out = Path(args.out)
    summary(run_all({s: streams[s] for s in chosen}, ran, args.seeds, out, args.jobs), out, title)
    return chosen, ran, out, args.seeds


def main() -> int:
    done = study(__doc__, STREAMS, list(METHODS), HERE / "results" / "class_incremental", "class-incremental, no task labels")
    return 0 if done else 2


if __name__ == "__main__":
    sys.exit(main())
