"""Golden accuracy matrices: four built-in configs at seed 0 must reach the ACC pinned before the
model-layer refactor (tests/golden/r_matrices_a0aec8d.json), within 0.01 or better. The runs are the real
configs (every epoch, every experience); only the extra evaluations that do not touch R (modality subsets,
missing rates, single modalities, the untrained model) are switched off to save time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lifelong_moe import load_config, run

GOLDEN = json.loads((Path(__file__).parent / "golden" / "r_matrices_a0aec8d.json").read_text())["runs"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_acc_is_kept(name: str, tmp_path: Path) -> None:
    pinned = GOLDEN[name]
    cfg = load_config(ROOT / pinned["config"], [
        f"seed={pinned['seed']}", f"output.root={tmp_path}", "trainer.cpu_threads=1", "trainer.enable_progress_bar=false",
        "evaluate_untrained=false", "modality_eval.subsets=false", "modality_eval.single_each_experience=false",
        "modality_eval.missing_rates=[]", "output.plots=false",
    ])
    result = run(cfg, progress=lambda _: None)
    R = np.asarray(result.accuracy_matrix)
    assert R.shape == np.asarray(pinned["accuracy_matrix"]).shape
    assert result.metrics["acc"] >= pinned["acc"] - 0.01, (
        f"{name}: ACC {result.metrics['acc']:.4f} against {pinned['acc']:.4f} pinned; R =\n{np.round(R, 4)}")
