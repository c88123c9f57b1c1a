"""How well can the MoE's task keys identify a sample's experience on multimodal digits? Fits the keys
(per-class diagonal Gaussians on the raw-input key views, as the model does) of all five 2-class
experiences at once and reports the share of test samples whose most likely experience is their own, per
modality subset and corruption level. Under hard routing this caps the class-incremental accuracy.

    python experiments/task_identity_ceiling.py
"""

from __future__ import annotations

import torch

from lifelong_moe.models.encoders import key_view
from lifelong_moe.moe import PrototypeKeys
from scenarios.sources import load_source
from scenarios.sources.multimodal_digits import MultimodalDigitsParams


def main() -> None:
    print("| corrupt_prob | image | signal | text | all three |\n|---|---|---|---|---|")
    for corrupt in (0.3, 0.0):
        data = load_source("multimodal_digits", MultimodalDigitsParams(corrupt_prob=corrupt), 0)
        views = {split: {m: key_view(data.modalities[m], torch.as_tensor(a)) for m, a in getattr(data, split).inputs.items()}
                 for split in ("train", "test")}
        y_train, y_test = torch.as_tensor(data.train.labels), torch.as_tensor(data.test.labels)
        row = []
        for subset in (["image"], ["signal"], ["text"], ["image", "signal", "text"]):
            keys = PrototypeKeys(var_floor=0.05)
            for e in range(5):
                rows = (y_train // 2) == e
                tokens = {m: views["train"][m][rows] for m in subset}
                keys.fit(e, tokens, {m: torch.ones(int(rows.sum()), dtype=torch.bool) for m in subset}, y_train[rows])
            scores = keys.score({m: views["test"][m] for m in subset})
            row.append(float((scores.argmax(1) == y_test // 2).float().mean()))
        print(f"| {corrupt} | " + " | ".join(f"{v:.3f}" for v in row) + " |")


if __name__ == "__main__":
    main()
