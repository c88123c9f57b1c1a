"""Domain-incremental learning (the same classes in new domains, no task labels at test time): the MoE and
the class-statistics model alone against naive fine-tuning, replay, DER and joint training, seeds
0..n-1, with the MoE's per-experience growth decisions (growth_decisions.json). Same protocol as
experiments/class_incremental.py (the backbone's lr and epochs chosen on validation splits of the training
data; the MoE chooses its settings on its own splits). The configs keep each domain's statistics as it
ended (`statistics.conditional: frozen`); variants: `moe_current` lets later domains refit them,
`moe_per_group` trains encoders per group.

    python experiments/domain_incremental.py [--seeds 3] [--streams domains_digits,domains_digits_fewshot,domains_synthetic]
        [--methods moe,moe_current,moe_per_group,stats,naive,replay,der,joint] [--out experiments/results/domain_incremental] [--jobs 1]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from class_incremental import METHODS, study

HERE = Path(__file__).resolve().parent
STREAMS = {
    "domains_digits": "configs/domains_digits.yaml",
    "domains_digits_fewshot": "configs/domains_digits_fewshot.yaml",
    "domains_synthetic": "configs/domains_synthetic.yaml",
}
METHODS["moe_current"] = ("moe", "naive", ["train.validation_fraction=0.2", "model.params.statistics.conditional=current"])
METHODS["moe_per_group"] = ("moe", "naive", ["train.validation_fraction=0.2", "model.params.encoder_training=per_group"])
DEFAULT_METHODS = ["moe", "moe_current", "moe_per_group", "stats", "naive", "replay", "der", "joint"]


def growth_decisions(out: Path, streams: list[str], methods: list[str], seeds: int) -> dict:
    """Per stream, MoE method and seed, per experience: the group it used and why, and what validation chose."""
    found: dict = {}
    for s in streams:
        for m in methods:
            for k in range(seeds):
                path = out / s / "runs" / m / f"seed{k}" / "results.json"
                if METHODS[m][0] != "moe" or not path.is_file():
                    continue
                results = json.loads(path.read_text())
                chosen = results["evaluations"][-1].get("statistics", {}).get("chosen_per_experience", {})
                found.setdefault(s, {}).setdefault(m, {})[f"seed{k}"] = [
                    {"group": p.get("group"), "growth": p.get("growth"), **chosen.get(str(i), {})}
                    for i, p in enumerate(results["parameters_per_experience"])]
    return found


def main() -> int:
    done = study(__doc__, STREAMS, DEFAULT_METHODS, HERE / "results" / "domain_incremental", "domain-incremental, no task labels")
    if not done:
        return 2
    streams, methods, out, seeds = done
    (out / "growth_decisions.json").write_text(json.dumps(growth_decisions(out, streams, methods, seeds), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
