"""What a modality looks like: its kind (which encoder reads it; the kinds are the names registered in
`lifelong_moe.models.ENCODERS`), per-sample shape and dtype."""

from __future__ import annotations

from dataclasses import dataclass

MASK_KEY = "mask"  # reserved input key: {modality: bool} presence flags, never a modality name


@dataclass(frozen=True)
class ModalitySpec:
    """Shape and kind of one modality. `vocab_size` is set for token (text) modalities."""

    kind: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    vocab_size: int | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape), "dtype": self.dtype, "vocab_size": self.vocab_size}
