"""What the class statistics keep, and what it costs in accuracy: ACC and kept bytes per setting of
`model.params.statistics.rank_share` (0: the full covariance as a float32 triangle; s: its top s x width
eigenpairs plus the diagonal of the rest, where smaller), over seeds, with the real configs (every epoch,
every experience).

    python experiments/statistics_memory.py [--configs split_digits domains_digits] [--shares 0 0.125 0.25 0.375] [--seeds 0 1 2]

Writes experiments/results/statistics_memory/<config>.md and .json: per share, ACC per seed and its mean,
the bytes kept after each experience (`stored_bytes`) and after the last, and the difference of ACC to
the first row seed by seed. `--reference CONFIG:NAME=BYTES:ACC,ACC,...` adds a row measured elsewhere
(e.g. the float64 square on an older commit), first."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from lifelong_moe import load_config, run

ROOT = Path(__file__).resolve().parent.parent


def measure(config: str, share: float, seed: int, root: str) -> dict:
    cfg = load_config(ROOT / "configs" / f"{config}.yaml", [
        f"seed={seed}", f"output.root={root}", "trainer.cpu_threads=1", "trainer.enable_progress_bar=false",
        f"model.params.statistics.rank_share={share}"])
    result = run(cfg, progress=lambda _: None)
    return {"acc": result.metrics["acc"], "stored_bytes": [p["stored_bytes"] for p in result.results["parameters_per_experience"]]}


def table(config: str, rows: dict[str, dict], seeds: list[int]) -> str:
    """Markdown: one row per setting; sizes and ACC differences against the first row (the reference, if given)."""
    base_name, base = next(iter(rows.items()))
    lines = [f"# Class statistics kept on {config}: ACC and bytes per `statistics.rank_share`", "",
             f"Seeds {seeds}; bytes after the last experience (`stored_bytes`); ΔACC = ACC - ACC of `{base_name}`, seed by seed.", "",
             f"| setting | bytes kept | / {base_name} | ACC per seed | mean ACC | ΔACC per seed |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        accs = row["acc"]
        deltas = ", ".join(f"{a - b:+.4f}" for a, b in zip(accs, base["acc"], strict=True)) if len(accs) == len(base["acc"]) else ""
        lines.append(f"| {name} | {row['bytes']:,} | {row['bytes'] / base['bytes']:.3f} | "
                     f"{', '.join(f'{a:.4f}' for a in accs)} | {statistics.mean(accs):.4f} | {deltas} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["split_digits", "domains_digits"])
    ap.add_argument("--shares", nargs="+", type=float, default=[0.0, 0.125, 0.25, 0.375])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--reference", action="append", default=[], help="CONFIG:NAME=BYTES:ACC,ACC,... a row measured elsewhere")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "statistics_memory"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for config in args.configs:
        rows: dict[str, dict] = {}
        for ref in args.reference:
            where, _, value = ref.partition("=")
            cfg_name, _, name = where.partition(":")
            if cfg_name == config:
                size, _, accs = value.partition(":")
                rows[name] = {"bytes": int(size), "acc": [float(a) for a in accs.split(",")]}
        for share in args.shares:
            runs = []
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as root:
                    runs.append(measure(config, share, seed, root))
                print(f"{config} rank_share {share} seed {seed}: ACC {runs[-1]['acc']:.4f}, {runs[-1]['stored_bytes'][-1]:,} bytes", flush=True)
            rows[f"rank_share {share}"] = {"bytes": runs[0]["stored_bytes"][-1], "acc": [r["acc"] for r in runs],
                               "stored_bytes_per_experience": runs[0]["stored_bytes"]}
        (out / f"{config}.json").write_text(json.dumps({"seeds": args.seeds, "rows": rows}, indent=1))
        text = table(config, rows, args.seeds)
        (out / f"{config}.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
