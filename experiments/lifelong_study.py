"""The lifelong study: every method on every stream, each method with its own learning rate and epochs
chosen on validation data, seeds 0..n-1 on the test data. Writes per stream comparison.{md,csv} (with
what each part of the MoE contributes), tuning.json and plots, and one summary over streams.

    python experiments/lifelong_study.py [--streams cluttered_digits,formant_words] [--methods moe,stats,replay,der,joint]
        [--seeds 3] [--jobs 2] [--out experiments/results/lifelong]

Protocol (nothing is chosen on test data):
- Tuning, per stream and method, at seed 0: the whole lifelong run on a *holdout* version of the stream
  (each source's training split divided 80/20, the 20% standing in for the test split; the test data unused),
  for every learning rate in LRS and epochs in EPOCHS; the best final average accuracy wins (ties: fewer
  epochs, then the smaller rate); a setting whose loss diverges loses. Methods with nothing to train by
  gradient (`stats`) are not tuned. Variants (`moe_*`) use their base method's choice.
- Test runs: the chosen settings, seeds 0..n-1, on the stream as configured (its test splits). A seed whose
  loss diverges is named in `diverged.md` beside the table and left out of its means.
- Every method trains the same backbone where it has one (the config's `multimodal_mlp` defaults for the
  baselines; the MoE's encoders are the same modules) with the config's `train` section otherwise, augmentation
  included. Replay, DER and ER-ACE keep 200 samples.
Finished runs are read back from their results.json, so an interrupted study continues where it stopped.
"""

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
import yaml
from class_incremental import read_back_or_run, summary

from lifelong_moe import config_from_dict
from lifelong_moe.compare import comparison_row, write_comparison
from lifelong_moe.errors import TrainingError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STREAMS = {name: f"configs/{name}.yaml" for name in (
    "cluttered_digits", "formant_words", "default", "split_digits", "split_mnist1d", "domains_digits", "modality_incremental")}
HELD_OUT = {"formant_speakers": "configs/formant_speakers.yaml"}  # run only with --held-out, once, at the end
METHODS: dict[str, tuple[str, str, dict[str, Any]]] = {  # name -> (model, strategy, config changes as dotted keys)
    "moe": ("moe", "naive", {}),
    "stats": ("stats", "naive", {}),
    "naive": ("multimodal_mlp", "naive", {}),
    "replay": ("multimodal_mlp", "replay", {}),
    "der": ("multimodal_mlp", "der", {}),
    "er_ace": ("multimodal_mlp", "er_ace", {}),
    "joint": ("multimodal_mlp", "cumulative", {}),
    # ablations of the MoE: one part removed at a time (tuned settings of `moe`)
    "moe_fixed_gate": ("moe", "naive", {"model.params.gate": "fixed"}),
    "moe_shared_encoders": ("moe", "naive", {"model.params.encoder_training": "introduced", "model.params.gate": "fixed"}),
    "moe_no_shift": ("moe", "naive", {"train.shift_augment": 0.0}),
    "moe_no_self_labels": ("moe", "naive", {"model.params.self_labels": "none"}),
    "moe_pnn": ("moe", "naive", {"model.params.communication": "pnn"}),
    # the other way round, on streams configured without it: learned features in the gate
    "moe_nested": ("moe", "naive", {"model.params.gate": "nested", "model.params.encoder_training": "per_group"}),
}
LRS = (1e-3, 3e-3)
EPOCHS = (5, 20)
QUIET = {"trainer.enable_progress_bar": False, "trainer.accelerator": "cpu", "trainer.devices": "1", "output.plots": False,
         "trainer.cpu_threads": 1}
NO_EXTRAS = {"evaluate_untrained": False, "modality_eval.subsets": False, "modality_eval.single_each_experience": False,
             "modality_eval.missing_rates": []}


def _set(cfg: dict, dotted: str, value: Any) -> None:
    node = cfg
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def method_config(stream_config: str, method: str, seed: int, root: Path, name: str, lr: float | None = None,
                  epochs: int | None = None, holdout: bool = False) -> dict:
    """The raw config of one run: the stream's own, with the method's model, strategy and changes."""
    cfg = yaml.safe_load((ROOT / stream_config).read_text())
    model, strategy, changes = METHODS[method]
    if cfg.get("model", {}).get("name") != model:
        cfg["model"] = {"name": model}
    cfg["strategy"] = {"name": strategy}
    for key, value in {**QUIET, **NO_EXTRAS, **changes, "seed": seed, "name": name, "output.root": str(root), "output.version": f"seed{seed}"}.items():
        _set(cfg, key, value)
    if lr is not None:
        _set(cfg, "train.lr", lr)
    if epochs is not None:
        _set(cfg, "train.epochs", epochs)
    if holdout:  # the test splits set aside: the held-out part of each source's training split stands in
        cfg["stream"]["sources"] = {n: {"kind": "holdout", "params": {"source": s, "fraction": 0.2}}
                                    for n, s in cfg["stream"]["sources"].items()}
    return cfg


def base_method(method: str) -> str:
    return method.split("_")[0] if method.startswith("moe_") else method


def tune(stream: str, config: str, method: str, out: Path, epochs_grid: tuple[int, ...] = EPOCHS) -> dict:
    """(lr, epochs) for a method on a stream, from its tuning record or a new grid on the holdout stream."""
    torch.set_num_threads(1)
    record = out / stream / "tuning" / f"{method}.json"
    if record.is_file():
        return json.loads(record.read_text())
    if method == "stats":
        chosen = {"lr": None, "epochs": None, "grid": {}}
    else:
        grid = {}
        for lr in LRS:
            for epochs in epochs_grid:
                name = f"{method}-lr{lr:g}-e{epochs}"
                raw = method_config(config, method, 0, out / stream / "tuning" / "runs", name, lr, epochs, holdout=True)
                try:
                    results = read_back_or_run(out / stream / "tuning" / "runs" / name / "seed0", lambda raw=raw: config_from_dict(raw))
                except TrainingError as err:  # a setting whose loss diverges is a candidate that lost, not the study's end
                    grid[f"{lr:g}/{epochs}"] = None
                    print(f"[{stream}] tuning {method} lr {lr:g} epochs {epochs}: diverged ({err})", flush=True)
                    continue
                grid[f"{lr:g}/{epochs}"] = results["metrics"]["acc"]
                print(f"[{stream}] tuning {method} lr {lr:g} epochs {epochs}: validation ACC {grid[f'{lr:g}/{epochs}']:.3f}", flush=True)
        finite = [k for k in grid if grid[k] is not None]
        if finite:
            best = max(finite, key=lambda k: (grid[k], -int(k.split("/")[1]), -float(k.split("/")[0])))
            chosen = {"lr": float(best.split("/")[0]), "epochs": int(best.split("/")[1]), "validation_acc": grid[best], "grid": grid}
        else:  # no setting to test: its test runs are reported as diverged
            chosen = {"lr": None, "epochs": None, "diverged": True, "grid": grid}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(chosen, indent=1))
    return chosen


def test_run(stream: str, config: str, method: str, seed: int, out: Path) -> dict | str:
    """results.json of one test run; the error's message if its loss diverged (reported, not averaged)."""
    torch.set_num_threads(1)
    chosen = json.loads((out / stream / "tuning" / f"{base_method(method)}.json").read_text())
    if chosen.get("diverged"):
        return f"every setting of {base_method(method)} diverged on the holdout stream: {chosen['grid']}"
    raw = method_config(config, method, seed, out / stream / "runs", method, chosen["lr"], chosen["epochs"])
    try:
        return read_back_or_run(out / stream / "runs" / method / f"seed{seed}", lambda: config_from_dict(raw))
    except TrainingError as err:
        return str(err)


def run_study(streams: dict[str, str], methods: list[str], seeds: int, out: Path, jobs: int,
              epochs_grid: tuple[int, ...] = EPOCHS) -> dict[str, dict[str, list[dict]]]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        bases = sorted({base_method(m) for m in methods})
        list(pool.map(tune, *zip(*[(s, c, b, out, epochs_grid) for s, c in streams.items() for b in bases], strict=True)))
        tasks = [(s, c, m, k) for s, c in streams.items() for m in methods for k in range(seeds)]
        results = list(pool.map(test_run, *zip(*[(s, c, m, k, out) for s, c, m, k in tasks], strict=True)))
    all_rows: dict[str, dict[str, list[dict]]] = {}
    diverged: dict[str, list[str]] = {}
    for (s, _, m, k), res in zip(tasks, results, strict=True):
        if isinstance(res, str):
            diverged.setdefault(s, []).append(f"{m} seed {k}: {res}")
            print(f"[{s}] {m} seed {k}: DIVERGED ({res})", flush=True)
            continue
        all_rows.setdefault(s, {}).setdefault(m, []).append(comparison_row(res, res["metrics"]))
        print(f"[{s}] {m} seed {k}: ACC {res['metrics']['acc']:.3f}", flush=True)
    for s, rows in all_rows.items():
        write_comparison(out / s, rows)
        tuning = {b: json.loads((out / s / "tuning" / f"{b}.json").read_text()) for b in sorted({base_method(m) for m in rows})}
        (out / s / "tuning.json").write_text(json.dumps(tuning, indent=1))
        if diverged.get(s):  # seeds left out of the table's means
            (out / s / "diverged.md").write_text("Test runs whose loss diverged (left out of the means):\n\n"
                                                 + "".join(f"- {line}\n" for line in diverged[s]))
    return all_rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="cluttered_digits,formant_words")
    ap.add_argument("--methods", default="moe,stats,naive,replay,der,er_ace,joint")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", default=",".join(map(str, EPOCHS)), help="the tuning grid's epochs, e.g. 5,20,40")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side, one core each")
    ap.add_argument("--out", default=str(HERE / "results" / "lifelong"))
    ap.add_argument("--held-out", action="store_true", help="run the held-out stream (once, for the final measurement)")
    args = ap.parse_args()
    known = {**STREAMS, **HELD_OUT} if args.held_out else STREAMS
    streams = {s: known[s] for s in args.streams.split(",") if s}
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(args.streams.split(",")) - set(known)) + sorted(set(methods) - set(METHODS))
    if unknown:
        print(f"unknown stream or method: {unknown}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rows = run_study(streams, methods, args.seeds, out, args.jobs, tuple(int(e) for e in args.epochs.split(",")))
    summary(rows, out, "lifelong study: ACC, each method's lr and epochs chosen on validation")
    for s, per_method in rows.items():
        spread = {m: statistics.pstdev([r["acc"] for r in rs]) for m, rs in per_method.items()}
        print(f"[{s}] largest seed spread (std of ACC): {max(spread.values()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
