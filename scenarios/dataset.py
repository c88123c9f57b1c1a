"""A torch dataset of multimodal samples: `({modality: tensor, "mask": {modality: bool}}, label)`."""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from scenarios.modality import MASK_KEY, ModalitySpec


class MultimodalDataset(Dataset):
    """Every sample carries every modality of the stream; an absent one is zeros with its mask False,
    so experiences with different modalities can be concatenated, replayed and collated together."""

    def __init__(
        self,
        inputs: Dict[str, np.ndarray],
        present: Dict[str, np.ndarray],
        labels: np.ndarray,
        specs: Dict[str, ModalitySpec],
    ) -> None:
        n = len(labels)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.tensors: Dict[str, torch.Tensor] = {}
        self.present: Dict[str, torch.Tensor] = {}
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

    @property
    def targets(self) -> List[int]:
        return self.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[dict, int]:
        sample = {m: t[i] for m, t in self.tensors.items()}
        sample[MASK_KEY] = {m: p[i] for m, p in self.present.items()}
        return sample, int(self.labels[i])
