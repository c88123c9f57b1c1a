"""User-facing errors: raised for bad configs, data or command lines, reported as one line with exit code 2.

They live at the bottom of the package: the data layer (`scenarios`), the MoE core and the models all
raise them, and none of those layers should import another just to name an error."""

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
    return msg.strip().splitlines()[0]
