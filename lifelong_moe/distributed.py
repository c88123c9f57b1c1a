"""Roles of processes under Lightning DDP: which one writes, where the others find the run directory,
and how evaluation splits a test set across ranks without repeating samples."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch.distributed as dist
from torch.utils.data import Sampler

# Set by the writing process before Lightning launches the others (they inherit its environment),
# so every rank of one run agrees on its directory, and a resumed run on its checkpoint.
RUN_DIR_ENV = "LIFELONG_MOE_RUN_DIR"


def _env_rank(*names: str) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return 0


def is_writer() -> bool:
    """True in the one process that writes outputs: global rank 0, or the only process.

    Before the process group exists, the launcher's environment says it: RANK where a cluster sets it,
    otherwise node rank 0 and local rank 0 (Lightning sets LOCAL_RANK in the processes it starts)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_rank("RANK") == 0 and _env_rank("NODE_RANK", "GROUP_RANK") == 0 and _env_rank("LOCAL_RANK") == 0


class RankShardSampler(Sampler[int]):
    """Indices `rank::world_size` once a process group exists, all indices otherwise.

    Decided when iterated, because the first evaluation may be what makes Lightning start the other
    processes. Unlike DistributedSampler it never pads with repeats, so metrics synchronised across
    ranks (torchmetrics) count every test sample exactly once and equal a single process's."""

    def __init__(self, n: int) -> None:
        self.n = n

    def _indices(self) -> range:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return range(dist.get_rank(), self.n, dist.get_world_size())
        return range(self.n)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())
