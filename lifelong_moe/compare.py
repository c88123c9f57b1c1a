"""Compare methods on one stream: every contender runs the same benchmark and seeds through the same
runner and evaluator, and the comparison is written as markdown, CSV and PNG beside the runs, whose
TensorBoard curves overlay under one root."""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lifelong_moe.config import ComponentConfig, ExperimentConfig
from lifelong_moe.config.values import MAX_SEED
from lifelong_moe.errors import ConfigError, Interrupted
from lifelong_moe.preparation import prepare
from lifelong_moe.registry import MODELS, STRATEGIES
from lifelong_moe.reporting.files import atomic_write_text, check_path_component, claim_run_dir, write_csv
from lifelong_moe.reporting.plots import comparison_figure, save_figure
from lifelong_moe.reporting.results_file import load_results, refuse_problem
from lifelong_moe.runner import run
from scenarios.cache import shared_in_process

ALIASES = {"joint": "cumulative"}
COLUMNS = ("acc", "avg_incremental_acc", "bwt", "fwt", "forgetting")


@dataclass
class Contender:
    name: str
    model: ComponentConfig
    strategy: str


def contenders(cfg: ExperimentConfig, names: Sequence[str], backbone: ComponentConfig) -> list[Contender]:
    """A registered model's name (e.g. `moe`) runs that model with `naive` (the config's own params if it is
    the config's model); a strategy's name (or `joint`) runs that strategy on the dense backbone."""
    out = []
    for name in names:
        strategy = ALIASES.get(name, name)
        if name in MODELS and strategy not in STRATEGIES:
            model = cfg.model if cfg.model.name == name else ComponentConfig(name=name)
            out.append(Contender(name, copy.deepcopy(model), "naive"))
        elif strategy in STRATEGIES:
            out.append(Contender(name, copy.deepcopy(backbone), strategy))
        else:
            raise ConfigError(f"--strategies: unknown '{name}'; choose from models {', '.join(MODELS)}, joint, "
                              f"or strategies {', '.join(STRATEGIES)}")
    if not out:
        raise ConfigError("--strategies: the list is empty")
    if len({c.name for c in out}) != len(out):
        raise ConfigError(f"--strategies: a name appears twice in {list(names)}")
    return out


def default_backbone(cfg: ExperimentConfig) -> ComponentConfig:
    """The dense model the baselines share: the config's own if it is registered as a backbone, else the
    first registered backbone (`multimodal_mlp`)."""
    if MODELS.meta(cfg.model.name).get("backbone"):
        return copy.deepcopy(cfg.model)
    return ComponentConfig(name=next(n for n in MODELS if MODELS.meta(n).get("backbone")))


def compare(cfg: ExperimentConfig, names: Sequence[str], seeds: int, backbone: ComponentConfig | None = None,
            progress: Callable[[str], None] = print) -> Path:
    """Run every contender for `seeds` seeds (cfg.seed, cfg.seed+1, ...) and write the comparison.
    Returns its directory: `cfg.output.root/<name>-compare/<version>/`.

    Every contender's run is checked (`prepare`) before the directory is created. If the comparison stops
    before any run finished, the directory is removed; runs that finished stay, each in its own folder."""
    check_path_component(f"{cfg.name}-compare", "name")
    if seeds < 1:
        raise ConfigError(f"--seeds: must be at least 1, got {seeds}")
    if cfg.seed + seeds - 1 > MAX_SEED:
        raise ConfigError(f"--seeds: seeds {cfg.seed}..{cfg.seed + seeds - 1} go beyond the largest seed, {MAX_SEED}")
    entrants = contenders(cfg, names, backbone or default_backbone(cfg))
    with shared_in_process():  # every source read and decoded (and encoded) once, for every method and seed
        return _compare(cfg, entrants, seeds, progress)


def _compare(cfg: ExperimentConfig, entrants: list[Contender], seeds: int, progress: Callable[[str], None]) -> Path:
    for c in entrants:  # everything each run would refuse, refused now
        prepare(_run_config(cfg, c, cfg.seed, cfg.output.root), progress=progress)
    claimed = claim_run_dir(cfg.output.root, f"{cfg.name}-compare", cfg.output.version)
    out_dir = claimed.path
    rows: dict[str, list[dict[str, Any]]] = {}
    try:
        for n, c in enumerate(entrants):
            for k in range(seeds):
                where = f"[compare] {c.name} seed {cfg.seed + k} ({n * seeds + k + 1}/{len(entrants) * seeds})"
                result = run(_run_config(cfg, c, cfg.seed + k, str(out_dir)), progress=_within(where, progress))
                rows.setdefault(c.name, []).append(comparison_row(result.results, result.metrics))
                progress(f"{where}: ACC {result.metrics['acc']:.3f} in {result.results['wall_time_s']:.1f}s")
        write_comparison(out_dir, rows)
    except BaseException as err:
        if not rows:
            claimed.remove()
        if isinstance(err, Interrupted):
            err.run_dir, err.total, err.kept = str(out_dir), 0, bool(rows)
        raise
    progress(f"[compare] done | {out_dir / 'comparison.md'}")
    return out_dir


def _within(where: str, progress: Callable[[str], None]) -> Callable[[str], None]:
    """A run's progress lines as lines of the comparison: its experiences, decoding and encoding, each under
    `where`; the run's closing line is left to the comparison's own."""

    def tell(line: str) -> None:
        text = line.removeprefix("[lifelong-moe] ")
        if not text.startswith("done in "):
            progress(f"{where} | {text}")

    return tell


def _run_config(cfg: ExperimentConfig, c: Contender, seed: int, root: str) -> ExperimentConfig:
    run_cfg = copy.deepcopy(cfg)
    run_cfg.name, run_cfg.seed, run_cfg.model = c.name, seed, copy.deepcopy(c.model)
    run_cfg.strategy = ComponentConfig(name=c.strategy, params=dict(cfg.strategy.params) if c.strategy == cfg.strategy.name else {})
    run_cfg.output.root, run_cfg.output.version = root, f"seed{seed}"
    run_cfg.trainer.enable_progress_bar = False  # one line per run instead
    return run_cfg


def comparison_row(results: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """One run's line of a comparison, from its results.json content."""
    params = results["parameters_per_experience"][-1]
    R = np.asarray(results["accuracy_matrix"], dtype=float)
    return {
        **{k: float(metrics[k]) for k in COLUMNS if metrics.get(k) is not None},
        "final_per_experience": R[-1].tolist(),
        "seen_acc": list(metrics["seen_acc"]),
        "model": results["model"],
        "parameters": int(params["total"]),
        "trainable": int(params["trainable"]),
        "memory": results["memory"],
        "memory_bytes": int(results.get("memory_bytes", 0)),
        "wall_time_s": float(results["wall_time_s"]),
        "contributions": {part: {"acc": v["acc"], "bwt": v["bwt"]} for part, v in results.get("contributions", {}).items()},
    }


def completed_runs(out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The results.json of every completed run under `out_dir/<contender>/<seed>/`, per contender, in the
    order the comparison ran them (its comparison.csv), seeds sorted."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(out_dir).glob("*/*/results.json")):
        results = load_results(path)
        if isinstance(results, dict) and results.get("status") != "complete":
            continue  # an interrupted run: the comparison tabulates the finished ones
        refuse_problem(path, results)
        runs.setdefault(path.parent.parent.name, []).append(results)
    if not runs:
        raise ConfigError(f"{out_dir}: no completed runs to tabulate")
    previous = Path(out_dir) / "comparison.csv"
    if previous.is_file():  # keep the order the comparison was run in
        order = [line.split(",", 1)[0] for line in previous.read_text().splitlines()[1:]]
        runs = {n: runs[n] for n in order if n in runs} | {n: r for n, r in runs.items() if n not in order}
    return runs


def tabulate(out_dir: Path, label: str = "strategy") -> dict[str, list[dict[str, Any]]]:
    """Rebuild a comparison's rows from the runs saved under `out_dir/<contender>/<seed>/results.json`
    (e.g. after changing how it is tabulated), and rewrite its tables and plots."""
    rows = {n: [comparison_row(r, r["metrics"]) for r in runs] for n, runs in completed_runs(out_dir).items()}
    write_comparison(Path(out_dir), rows, label)
    return rows


def contributions_table(rows: dict[str, list[dict[str, Any]]], label: str = "strategy") -> list[str]:
    """Markdown lines: for each method whose model reports parts (e.g. the MoE's statistics and experts),
    ACC and BWT of each part alone and of the whole, mean ± std over seeds; none if no method has parts."""
    lines = []
    for name, runs in rows.items():
        for part in runs[0].get("contributions", {}):
            cells = []
            for key in ("acc", "bwt"):
                vals = [r["contributions"][part][key] for r in runs if r.get("contributions", {}).get(part, {}).get(key) is not None]
                cells.append(spread(*_mean_std(vals), len(vals)) if vals else "n/a")
            lines.append(f"| {name} | {part} | {cells[0]} | {cells[1]} |")
    if not lines:
        return []
    return ["", "What each part contributes (the part alone; `model`: the whole):", "",
            f"| {label} | part | ACC | BWT |", "|---|---|---|---|", *lines]


def human_bytes(n: int) -> str:
    """1,234,567 -> '1.2 MB' (decimal units)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def spread(mean: float, std: float, n: int, digits: int = 3) -> str:
    """`mean ± std` over n seeds; the mean alone for one seed, whose spread is unknown (not zero); `n/a` for a
    metric the runs did not measure (FWT without `evaluate_untrained`)."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"


TITLES = {"acc": "ACC", "avg_incremental_acc": "avg inc. acc", "bwt": "BWT", "fwt": "FWT", "forgetting": "forgetting"}


def summary_table(rows: dict[str, list[dict[str, Any]]], key: str = "wall_time_s") -> list[list[Any]]:
    """One line per contender: name, model, seeds, (mean, std) of each of COLUMNS, parameters, trainable,
    memory, memory_bytes, (mean, std) of `key`."""
    table = []
    for name, runs in rows.items():
        line: list[Any] = [name, runs[0]["model"], len(runs)]
        for k in COLUMNS:
            vals = [r[k] for r in runs if k in r]
            line += list(_mean_std(vals)) if vals else [float("nan"), float("nan")]
        line += [runs[0]["parameters"], runs[0]["trainable"], runs[0]["memory"], runs[0].get("memory_bytes", 0),
                 *_mean_std([r[key] for r in runs])]
        table.append(line)
    return table


def display_table(table: list[list[Any]], label: str, title: str) -> tuple[list[str], list[list[str]]]:
    """The summary table as text cells (header, rows), as comparison.md and the report show it."""
    header = [label, "model", *[TITLES[k] for k in COLUMNS], "parameters", "trainable", "memory", "kept (bytes)", title]
    cells = []
    for line in table:
        n = line[2]
        cells.append([line[0], line[1], *[spread(line[3 + 2 * i], line[4 + 2 * i], n) for i in range(len(COLUMNS))],
                      f"{line[-6]:,}", f"{line[-5]:,}", str(line[-4]), human_bytes(line[-3]), spread(line[-2], line[-1], n, 2)])
    return header, cells


def spread_note(rows: dict[str, list[dict[str, Any]]]) -> str:
    seeds = sorted({len(r) for r in rows.values()})
    if seeds == [1]:
        return "One seed per method: no spread is shown. Parameters after the last experience."
    return (f"Mean ± standard deviation over {'/'.join(map(str, seeds))} seeds (one seed: the value alone). "
            "Parameters after the last experience.")


def write_comparison(out_dir: Path, rows: dict[str, list[dict[str, Any]]], label: str = "strategy",
                     timing: tuple[str, str] = ("wall_time_s", "wall time (s)")) -> None:
    """comparison.md, comparison.csv, final_accuracy.png and acc_over_stream.png from per-seed rows.
    `timing`: the row key reported as mean ± std in the last column, and its title."""
    key, title = timing
    header = [label, "model", "seeds", *[f"{k}_{s}" for k in COLUMNS for s in ("mean", "std")],
              "parameters", "trainable", "memory", "memory_bytes", f"{key}_mean", f"{key}_std"]
    table = summary_table(rows, key)
    write_csv(out_dir / "comparison.csv", header, table)

    shown, cells = display_table(table, label, title)
    md = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    md += ["| " + " | ".join(line) + " |" for line in cells]
    md += ["", spread_note(rows)]
    md += contributions_table(rows, label)
    atomic_write_text(out_dir / "comparison.md", "\n".join(md) + "\n")

    final = {n: np.array([r["final_per_experience"] for r in runs]) for n, runs in rows.items()}
    seen = {n: np.array([r["seen_acc"] for r in runs]) for n, runs in rows.items()}
    fig_final, fig_seen = comparison_figure(final, seen)
    save_figure(fig_final, out_dir / "final_accuracy.png")
    save_figure(fig_seen, out_dir / "acc_over_stream.png")
