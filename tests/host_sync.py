"""A guard that fails on every torch call that makes the host wait for a GPU (or copies host data to it),
so a CPU test can check that a forward is free of them: what `torch.cuda.set_sync_debug_mode("error")`
checks on a GPU, by the functions called rather than by the driver."""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

WAITS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "argwhere", "unique", "unique_consecutive",
         "bincount", "masked_select", "cpu", "numpy", "tensor", "as_tensor"}  # tensor/as_tensor: host data to the device


def _bool_index(value: Any) -> bool:
    items = value if isinstance(value, tuple) else (value,)
    return any(isinstance(v, torch.Tensor) and v.dtype == torch.bool for v in items)


class HostSyncGuard(TorchFunctionMode):
    """Raises on a call that would synchronise; `calls` counts every torch call seen."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        self.calls += 1
        waits = name in WAITS
        waits |= name in ("__getitem__", "__setitem__", "index_put", "index_put_") and len(args) > 1 and _bool_index(args[1])
        waits |= name == "repeat_interleave" and isinstance(args[1] if len(args) > 1 else kwargs.get("repeats"), torch.Tensor) \
            and kwargs.get("output_size") is None
        if waits:
            raise AssertionError(f"host synchronisation in the forward: torch {name}")
        return func(*args, **kwargs)
