"""User-facing errors: raised for bad configs, data or command lines, reported as one line with exit code 2.

They live at the bottom of the package: the data layer (`scenarios`), the MoE core and the models all
raise them, and none of those layers should import another just to name an error."""

from __future__ import annotations

import signal


class UserError(Exception):
    """An error caused by the user's input (config, data file, command line), not by a bug."""


class ConfigError(UserError):
    """A config value is missing, unknown, of the wrong type or inconsistent with the data."""


class DataError(UserError):
    """A data file or sample is missing, unreadable or malformed."""


class InputError(UserError):
    """A sample or batch that does not match the modalities it claims (name, shape, dtype)."""


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


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (OmegaConf's `msg`, else `str(err)`)."""
    msg = getattr(err, "msg", None) or str(err) or type(err).__name__
    lines = str(msg).strip().splitlines()
    return lines[0] if lines else type(err).__name__
