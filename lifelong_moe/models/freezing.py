"""What stops training when a new experience starts: every parameter that lived through an earlier
experience, except what a setting keeps training. A test checks that what froze stays bit-identical."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

ENCODER_TRAINING = ("introduced", "never", "always", "per_group")
"""introduced: a modality's encoder trains in the experience that brings it, then freezes; never: random
encoders stay frozen; always: encoders keep training (old paths drift); per_group: each new group of
experts trains its own copy (`group_encoders.py`)."""


def freeze_old(old: Iterable[nn.Parameter], *, encoders: set[int], shared: set[int], encoder_training: str,
               freeze: bool) -> None:
    """Set `requires_grad` of the parameters `old` that existed before this experience: shared experts (ids in
    `shared`, anchored instead) keep training; the shared encoders (ids in `encoders`) only under
    `encoder_training: always`; everything else stops, unless `freeze` is off."""
    for p in old:
        if id(p) in shared:
            p.requires_grad_(True)
        elif id(p) in encoders:
            p.requires_grad_(encoder_training == "always")
        else:
            p.requires_grad_(not freeze)
