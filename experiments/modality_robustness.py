"""Missing modalities and the modality-dropout remedy on one stream: accuracy with each subset of
modalities and at each missing rate, with and without `train.modality_dropout`, over several seeds.

    python experiments/modality_robustness.py [--config configs/default.yaml] [--dropout 0 0.3] [--seeds 3]

Prints a markdown table (mean ± std over seeds) and writes it to experiments/results/modality/<stream>.md."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from lifelong_moe import load_config, run

HERE = Path(__file__).resolve().parent


def _fmt(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--dropout", nargs="+", type=float, default=[0.0, 0.3])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    columns: dict[str, dict[float, list[float]]] = {}
    for p in args.dropout:
        for seed in range(args.seeds):
            cfg = load_config(args.config, [f"train.modality_dropout={p}", f"seed={seed}", "trainer.enable_progress_bar=false",
                                            f"output.root={HERE / 'results' / 'runs' / 'modality'}",
                                            f"output.version=dropout{p:g}_seed{seed}"])
            res = run(cfg, progress=lambda _: None)
            rob = res.results["modality_evaluation"]
            cells = {"ACC": res.metrics["acc"]}
            cells.update({f"missing {float(r) * 100:g}%": v["accuracy"] for r, v in rob["missing_rate"].items()})
            cells.update({f"only {k}": v["accuracy"] for k, v in rob.get("subsets", {}).items() if v["accuracy"] is not None})
            for name, value in cells.items():
                columns.setdefault(name, {}).setdefault(p, []).append(value)
            print(f"[modality] dropout {p:g} seed {seed}: ACC {res.metrics['acc']:.3f}", flush=True)
    lines = ["| measure | " + " | ".join(f"modality_dropout={p:g}" for p in args.dropout) + " |",
             "|---|" + "---|" * len(args.dropout)]
    lines += [f"| {name} | " + " | ".join(_fmt(by_p[p]) for p in args.dropout) + " |" for name, by_p in columns.items()]
    table = "\n".join(lines) + f"\n\nMean ± std over {args.seeds} seeds; `{args.config}`; accuracy over every test experience after the last.\n"
    out = HERE / "results" / "modality" / f"{Path(args.config).stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
