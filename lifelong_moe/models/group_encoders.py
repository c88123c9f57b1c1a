"""Per-group encoders (`encoder_training: per_group`): every new group of experts gets its own trainable
copy of the modality encoders, warm-started from the group it grew from, trained with its experts and
frozen with them; a sample is encoded by its routed group's copy. Group 0, and modalities a group's copy
lacks (added after it grew), use the model's own encoders."""

from __future__ import annotations

import copy

import torch
from torch import nn


class GroupEncoders(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.copies = nn.ModuleDict()  # str(group) -> ModuleDict(modality -> encoder)

    def __len__(self) -> int:
        return len(self.copies)

    def of(self, group: int, shared: nn.ModuleDict) -> dict[str, nn.Module]:
        """The encoders `group` uses, per modality: its own copy where it has one, else the shared one."""
        own = self.copies[str(group)] if str(group) in self.copies else {}  # noqa: SIM401 (ModuleDict has no get)
        return {m: own[m] if m in own else enc for m, enc in shared.items()}  # noqa: SIM401

    def grow(self, group: int, source: dict[str, nn.Module], modalities: list[str]) -> None:
        """`group`'s own encoders for `modalities`: trainable copies of `source`'s."""
        self.copies[str(group)] = nn.ModuleDict({m: copy.deepcopy(source[m]) for m in modalities}).requires_grad_(True)

    def modalities(self) -> dict[str, list[str]]:
        """What to rebuild before a checkpoint's weights load: group -> modalities with a copy."""
        return {g: list(encoders) for g, encoders in self.copies.items()}

    def encode(self, inputs: dict[str, torch.Tensor], tokens: dict[str, torch.Tensor], sample_group: torch.Tensor,
               modality_embed: nn.ParameterDict) -> dict[str, torch.Tensor]:
        """Each sample's tokens from its group's encoders (`sample_group` (B,)); others as given."""
        out = dict(tokens)
        for g in sample_group.unique().tolist():
            if str(g) not in self.copies:
                continue
            rows = (sample_group == g).nonzero(as_tuple=True)[0]
            for m, encoder in self.copies[str(g)].items():
                if m in out:
                    out[m] = out[m].index_put((rows,), encoder(inputs[m][rows]) + modality_embed[m])
        return out
