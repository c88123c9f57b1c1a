"""Signals as exceptions. Inside `signals_raise()`, SIGINT (Ctrl-C), SIGTERM and SIGHUP raise `Interrupted`
in the main thread: the run stops where it is, Lightning tears its Trainer down and re-raises (it would
turn a KeyboardInterrupt into `sys.exit(1)`, and SIGTERM into a clean-looking exit), and the runner
reports where the run stopped. `deferred()` holds a signal back while a checkpoint and results.json are
written as a pair.

A signal the process was started ignoring (`nohup`, a background job) stays ignored. Processes forked
from this one (DataLoader workers) leave the signal to the main process: they see a KeyboardInterrupt,
which PyTorch's worker loop swallows quietly, or die of SIGTERM as they would without this module.

A signal that lands while a C extension initialises (and the Python it calls, such as torch's extension
importing numpy) is delivered again once that initialisation is over: the C code may swallow the
exception and carry on with half-imported modules that fail far away. Anywhere else, Python's own import
machinery lets the exception through and the command ends with its one line."""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.machinery import ExtensionFileLoader
from types import FrameType
from typing import Any

from lifelong_moe.errors import Interrupted

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
_pending: list[int] = []
_depth = [0]
_owner = [0]  # the pid that installed the handlers
_redelivering: list[threading.Thread] = []


def _raise(signum: int, frame: Any) -> None:
    if os.getpid() != _owner[0]:  # a forked worker
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _depth[0]:
        _pending.append(signum)
        return
    if _in_extension_init(frame):
        _redeliver_later(signum)
        return
    raise Interrupted(signum)


def _in_extension_init(frame: FrameType | None) -> bool:
    """Whether a C extension module is being created or executed somewhere down this stack."""
    while frame is not None:
        code = frame.f_code
        if (code.co_name in ("create_module", "exec_module") and code.co_filename.startswith("<frozen importlib")
                and isinstance(frame.f_locals.get("self"), ExtensionFileLoader)):
            return True
        frame = frame.f_back
    return False


def _redeliver_later(signum: int) -> None:
    """Wait, in a helper thread, until the main thread has left every extension's initialisation, then
    signal it again (the handler decides afresh)."""
    if any(t.is_alive() for t in _redelivering):
        return
    main_id = threading.main_thread().ident

    def watch() -> None:
        while _in_extension_init(sys._current_frames().get(main_id)):
            time.sleep(0.01)
        _thread.interrupt_main(signum)

    _redelivering[:] = [threading.Thread(target=watch, name="lifelong-moe-signal", daemon=True)]
    _redelivering[0].start()


@contextmanager
def signals_raise() -> Iterator[None]:
    """Install the raising handlers for the length of the block (main thread only), then restore the old ones."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _owner[0] = os.getpid()
    for s, handler in previous.items():
        if handler != signal.SIG_IGN:
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
