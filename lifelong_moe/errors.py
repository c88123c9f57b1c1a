"""User-facing errors: raised for bad configs, data or command lines, reported as one line with exit code 2.

The base classes live in `scenarios.errors` (the bottom layer, so the data layer needs nothing from here);
this module adds the errors of outputs, training and interrupts."""

from __future__ import annotations

import signal

from scenarios.errors import ConfigError, DataError, InputError, UserError, first_line

__all__ = ["ConfigError", "DataError", "InputError", "Interrupted", "OutputError", "TrainingError", "UserError", "first_line"]


class OutputError(UserError):
    """An output file could not be written (a full disk, no permission)."""


class TrainingError(UserError):
    """Training went wrong in a way the config explains, e.g. the loss became NaN or infinite."""


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM stopped the process. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way swallows it; Lightning tears its Trainer down and re-raises it.

    The runner fills in where the run stopped: `run_dir`, `completed` of `total` experiences, and whether
    the directory was kept (`kept`: it holds a resumable checkpoint) or removed."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.run_dir: str | None = None
        self.completed = 0
        self.total = 0
        self.kept = False

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name
