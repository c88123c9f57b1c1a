"""Signals as exceptions. Inside `signals_raise()`, SIGINT (Ctrl-C) and SIGTERM raise `Interrupted` in the
main thread: the run stops where it is, Lightning tears its Trainer down and re-raises (it would turn a
KeyboardInterrupt into `sys.exit(1)`, and SIGTERM into a clean-looking exit), and the runner reports where
the run stopped. `deferred()` holds a signal back while a checkpoint and results.json are written as a pair."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lifelong_moe.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: list[int] = []
_depth = [0]


def _raise(signum: int, frame: Any) -> None:
    if _depth[0]:
        _pending.append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Install the raising handlers for the length of the block (main thread only), then restore the old ones."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def deferred(drop: bool = False) -> Iterator[None]:
    """A signal that arrives inside the block is raised when it ends, so the block completes; with `drop`,
    it is ignored (a second Ctrl-C while a stopped run cleans up)."""
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        if not _depth[0] and _pending:
            signum = _pending[0]
            _pending.clear()
            if not drop:
                raise Interrupted(signum)
