"""Values that every forward reads but that change only when the model grows or learns: kept between
batches so that the cost per sample does not grow with the pool, and so that a forward on a GPU does not
wait for the host (no `.item()`, `.tolist()` or list-to-device copy per batch).

- `derived(tensor, key, fn)`: fn() computed once per in-place version of a buffer (e.g. a host copy of the
  floor chosen so far, or an index table built from the rows' experiences), kept on the tensor itself,
  so a replaced buffer (growth, `.to(device)`) simply has no cache.
- `StackCache`: `torch.stack` (or `torch.cat`) of a bank of parameters (router columns, heads, experts' weights), rebuilt
  only when one of them is replaced or changed in place; under autograd with trainable members, a fresh
  differentiable stack."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def derived(tensor: torch.Tensor, key: Hashable, fn: Callable[[], T]) -> T:
    """fn(), recomputed only after `tensor` was changed in place or moved."""
    cache: dict[Hashable, tuple[tuple, Any]] = tensor.__dict__.setdefault("_derived", {})
    now = state(tensor)
    hit = cache.get(key)
    if hit is not None and hit[0] == now:
        return hit[1]
    value = fn()
    cache[key] = (now, value)
    return value


def state(t: torch.Tensor) -> tuple:
    """What changes when a tensor's values may have: an in-place write bumps `_version`; `.to()` on a module
    swaps a parameter's data without a bump (new storage, dtype or device)."""
    return t._version, t.data_ptr(), t.dtype, t.device


class StackCache:
    """torch.stack(tensors) (or torch.cat, `join`) kept while the same tensors hold the same values. Callers
    pass the same list object while their bank is unchanged (a new list means new members); a move of the
    bank (`.to()`) shows in its first member's storage."""

    def __init__(self, join: Callable[[list[torch.Tensor]], torch.Tensor] = torch.stack) -> None:
        self.join = join
        self._source: Sequence[torch.Tensor] | None = None
        self._key: tuple = ()
        self._versions: list[int] = []
        self._value: torch.Tensor | None = None

    def __call__(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return self.join(list(tensors))  # gradients must reach each member
        versions = [t._version for t in tensors]  # an in-place write (optimizer step, load_state_dict) bumps it
        key = (len(tensors), *state(tensors[0])) if len(tensors) else (0,)
        if self._value is None or tensors is not self._source or key != self._key or versions != self._versions:
            with torch.no_grad():
                self._value = self.join(list(tensors))
            self._source, self._key, self._versions = tensors, key, versions
        return self._value
