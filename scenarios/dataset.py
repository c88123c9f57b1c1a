"""A torch dataset of multimodal samples: `({modality: tensor, "mask": {modality: bool}}, label)`."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from scenarios.batch import ModalityBatch, collate_modalities
from scenarios.modality import MASK_KEY, ModalitySpec


class MultimodalDataset(Dataset):
    """Every sample carries every modality of the stream; an absent one is zeros with its mask False,
    so experiences with different modalities can be concatenated, replayed and collated together."""

    def __init__(
        self,
        inputs: dict[str, np.ndarray],
        present: dict[str, np.ndarray],
        labels: np.ndarray,
        specs: dict[str, ModalitySpec],
    ) -> None:
        n = len(labels)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.tensors: dict[str, torch.Tensor] = {}
        self.present: dict[str, torch.Tensor] = {}
        for name, spec in specs.items():
            dtype = getattr(torch, spec.dtype)
            if name in inputs:
                self.tensors[name] = torch.as_tensor(np.ascontiguousarray(inputs[name])).to(dtype)
                self.present[name] = torch.as_tensor(present[name], dtype=torch.bool)
                # absent entries hold zeros, never stale data
                self.tensors[name][~self.present[name]] = 0
            else:
                self.tensors[name] = torch.zeros((n, *spec.shape), dtype=dtype)
                self.present[name] = torch.zeros(n, dtype=torch.bool)

    # batches collate into ModalityBatch, which generic continual-learning code can move, slice and join
    collate_fn = staticmethod(collate_modalities)

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[ModalityBatch, int]:
        # ModalityBatch survives torch's default_collate (it copies mapping types), so batches made by
        # loaders that ignore `collate_fn` (Avalanche's buffers, DER's logit pass) are ModalityBatch too
        sample = ModalityBatch({m: t[i] for m, t in self.tensors.items()})
        sample[MASK_KEY] = ModalityBatch({m: p[i] for m, p in self.present.items()})
        return sample, int(self.labels[i])
