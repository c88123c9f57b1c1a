"""Does any single modality of the multimodal digits source suffice? Trains a model jointly on all ten
classes with each modality alone and with all of them fused, over several seeds, and prints test accuracy.

    python experiments/modality_sufficiency.py [--seeds 3] [--config configs/joint_digits.yaml]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from lifelong_moe import load_config, run

SUBSETS = (["image"], ["signal"], ["text"], ["image", "signal", "text"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/joint_digits.yaml")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for subset in SUBSETS:
            accs = []
            for seed in range(args.seeds):
                cfg = load_config(args.config, [f"seed={seed}", f"output.root={root}", "trainer.enable_progress_bar=false",
                                                "evaluate_untrained=false", f"stream.experiences.0.modalities=[{','.join(subset)}]"])
                accs.append(run(cfg, progress=lambda s: None).accuracy_matrix[0, 0])
            rows.append(("+".join(subset), statistics.mean(accs), statistics.pstdev(accs)))
    print(f"| modalities | test accuracy (mean ± std over {args.seeds} seeds) |\n|---|---|")
    for name, mean, std in rows:
        print(f"| {name} | {mean:.3f} ± {std:.3f} |")


if __name__ == "__main__":
    main()
