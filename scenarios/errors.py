"""User-facing errors: raised for bad configs or bad data, reported as one line with exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input (config, data file, command line), not by a bug."""


class ConfigError(UserError):
    """A config value is missing, unknown, of the wrong type or inconsistent with the data."""


class DataError(UserError):
    """A data file or sample is missing, unreadable or malformed."""


class InputError(UserError):
    """A sample or batch that does not match the modalities it claims (name, shape, dtype)."""
