"""The pooled within-class scatter (D, D), kept compact between experiences, because it is by far the
largest thing the class statistics hold (D = 2048 made 33.5 MB in float64).

While an experience's samples arrive it is open: one float64 matrix that the exact streaming merges add
to. When the experience ends, `settle()` packs it:
- rank 0: its upper triangle in float32 (D(D+1)/2 values of 4 bytes: about a quarter of the float64
  square; the merges and the solves still run in float64);
- rank r (used only where smaller than the triangle, r < D / 2): its top r eigenpairs (basis in float32,
  eigenvalues in float64) plus, in float64, the diagonal of everything else, so every feature's variance,
  and so the trace and the shrinkage target, stay exact (a low-rank-plus-diagonal model, as in factor
  analysis).
The next experience opens it again from the packed values, so an uninterrupted run and one resumed from a
checkpoint (which holds the packed values) compute the same numbers."""

from __future__ import annotations

import torch
from torch import nn


class CompactScatter(nn.Module):
    def __init__(self, dim: int, rank: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.rank = rank if 0 < rank < dim / 2 else 0
        if self.rank:
            self.register_buffer("basis", torch.zeros(dim, self.rank, dtype=torch.float32))
            self.register_buffer("eigen", torch.zeros(self.rank, dtype=torch.float64))
            self.register_buffer("diagonal", torch.zeros(dim, dtype=torch.float64))
        else:
            self.register_buffer("packed", torch.zeros(dim * (dim + 1) // 2, dtype=torch.float32))
        self._open: torch.Tensor | None = None

    @property
    def is_open(self) -> bool:
        return self._open is not None

    @property
    def nbytes(self) -> int:
        """Bytes kept between experiences (the open float64 matrix is a working copy within one)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def full(self) -> torch.Tensor:
        """The scatter as a float64 (D, D) matrix: the open one, or unpacked."""
        return self._open if self._open is not None else self._unpack()

    @torch.no_grad()
    def add_(self, delta: torch.Tensor) -> None:
        """Add a float64 (D, D) increment (opens the matrix if needed)."""
        if self._open is None:
            self._open = self._unpack()
        self._open += delta

    @torch.no_grad()
    def settle(self) -> None:
        """Pack the open matrix and drop it."""
        if self._open is not None:
            self._pack(self._open)
            self._open = None

    def _upper(self, device: torch.device) -> torch.Tensor:
        return torch.ones(self.dim, self.dim, dtype=torch.bool, device=device).triu()

    def _pack(self, scatter: torch.Tensor) -> None:
        if not self.rank:
            self.packed.copy_(scatter[self._upper(scatter.device)])
            return
        values, vectors = torch.linalg.eigh(scatter)  # ascending
        top = vectors[:, -self.rank:].flip(1).float()  # (D, r), largest first
        eigen = values[-self.rank:].flip(0).clamp_min(0.0)
        explained = (top.double().pow(2) * eigen).sum(1)  # the diagonal of the kept part, as it will be rebuilt
        self.basis.copy_(top)
        self.eigen.copy_(eigen)
        self.diagonal.copy_((scatter.diagonal() - explained).clamp_min(0.0))

    def _unpack(self) -> torch.Tensor:
        if not self.rank:
            device = self.packed.device
            upper = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=device)
            upper[self._upper(device)] = self.packed.double()
            return upper + upper.triu(1).T
        basis = self.basis.double()
        return (basis * self.eigen) @ basis.T + torch.diag(self.diagonal)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self._open is not None:  # a checkpoint within an experience holds what has been merged so far
            self._pack(self._open)
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args, **kwargs):
        self._open = None
        super()._load_from_state_dict(*args, **kwargs)
