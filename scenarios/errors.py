"""User-facing errors: raised for bad configs, data or command lines, reported as one line with exit code 2.

They live in the bottom layer (`scenarios`), so that the data layer names its errors without importing the
library built on it; `lifelong_moe.errors` re-exports them and adds the errors of training and outputs."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input (config, data file, command line), not by a bug."""


class ConfigError(UserError):
    """A config value is missing, unknown, of the wrong type or inconsistent with the data."""


class DataError(UserError):
    """A data file or sample is missing, unreadable or malformed."""


class InputError(UserError):
    """A sample or batch that does not match the modalities it claims (name, shape, dtype)."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (OmegaConf's `msg`, else `str(err)`)."""
    msg = getattr(err, "msg", None) or str(err) or type(err).__name__
    lines = str(msg).strip().splitlines()
    return lines[0] if lines else type(err).__name__
