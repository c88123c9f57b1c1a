"""Progress lines for long data work (decoding a folder, encoding with a pretrained model), told to whoever
listens: the caller that builds a stream opens `reporting(print)` around it, and the data code calls `tell`
or counts with a `Ticker`. With no listener nothing is printed, so library users and tests stay quiet."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_LISTENERS: list[Callable[[str], None]] = []
EVERY_S = 10.0  # at most one progress line per this many seconds from a Ticker
QUIET_S = 1.0  # work done within this many seconds tells nothing (its result line says enough)


@contextmanager
def reporting(listener: Callable[[str], None]) -> Iterator[None]:
    """Send the progress lines of the data code run inside the block to `listener`."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


def tell(line: str) -> None:
    """One progress line, to the innermost listener (if any)."""
    if _LISTENERS:
        _LISTENERS[-1](f"[lifelong-moe] {line}")


class Ticker:
    """Counts finished items of `total` and tells `what: done/total (pct), elapsed` at most every `every` seconds,
    and once at the end unless it all took less than `quiet` seconds. Thread-safe: decoding threads may count
    together."""

    def __init__(self, what: str, total: int, every: float | None = None, quiet: float | None = None) -> None:
        self.what, self.total = what, total
        self.every = EVERY_S if every is None else every
        self.quiet = QUIET_S if quiet is None else quiet
        self.done = 0
        self.start = self.last = time.perf_counter()
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.perf_counter()
            finished = self.done >= self.total
            if (not finished and now - self.last < self.every) or (finished and now - self.start < self.quiet):
                return
            self.last = now
            done = self.done
        elapsed = now - self.start
        pct = 100.0 * done / max(self.total, 1)
        tell(f"{self.what}: {done}/{self.total} ({pct:.0f}%), {elapsed:.1f}s")
