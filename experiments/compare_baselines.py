"""The MoE model against Avalanche's baselines on two class-incremental
streams (the default multimodal digits and split MNIST-1D), 3 seeds each, through `lifelong_moe.compare`.

    python experiments/compare_baselines.py [--seeds 3] [--strategies ...]

Runs go under experiments/results/runs/ (TensorBoard: `tensorboard --logdir experiments/results/runs`);
the tables and plots are copied to experiments/results/<stream>/."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from lifelong_moe import load_config
from lifelong_moe.compare import compare

ALL = "moe,naive,avl_naive,ewc,si,lwf,replay,gem,agem,der,er_ace,joint"
HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["configs/default.yaml", "configs/split_mnist1d.yaml"])
    ap.add_argument("--strategies", default=ALL)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    for path in args.configs:
        cfg = load_config(path, [f"output.root={HERE / 'results' / 'runs'}"])
        out = compare(cfg, args.strategies.split(","), args.seeds)
        keep = HERE / "results" / cfg.name
        keep.mkdir(parents=True, exist_ok=True)
        for name in ("comparison.md", "comparison.csv", "final_accuracy.png", "acc_over_stream.png"):
            shutil.copy(out / name, keep / name)
        print((keep / "comparison.md").read_text())


if __name__ == "__main__":
    main()
