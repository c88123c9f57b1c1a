"""Components from the user's own code: modules named in a config's `imports:` list, and the modules of
installed packages that declare a `lifelong_moe.plugins` entry point. Importing such a module registers
its sources, models, strategies, encoders, growth policies or communication modes, exactly as the
built-ins register themselves; nothing in the core names them.

Entry points load once per process, the first time any registry is consulted; `imports:` load when a
config is read, before any name in it is looked up. A module that cannot be imported is reported in one
line naming it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

from scenarios.errors import ConfigError, first_line

ENTRY_POINT_GROUP = "lifelong_moe.plugins"
_entry_points_loaded = False


def load_entry_points() -> None:
    """Import every module declared under the `lifelong_moe.plugins` entry-point group (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as err:  # a broken plugin must say which one, in one line
            raise ConfigError(f"plugin '{point.name}' ({point.value}, entry point group {ENTRY_POINT_GROUP}) "
                              f"failed to import: {type(err).__name__}: {first_line(err)}") from None


def import_modules(names: Iterable[str], search: Iterable[Path] = (), key: str = "imports") -> None:
    """Import each module in `names` (dotted names); the folders in `search` (e.g. the config's own folder
    and the working directory) are looked in first, for modules that are files beside the config."""
    extra = [str(Path(p).resolve()) for p in search]
    saved = list(sys.path)
    sys.path[:0] = [p for p in extra if p not in sys.path]
    try:
        for k, name in enumerate(names):
            if not isinstance(name, str) or not name.strip() or any(not part.isidentifier() for part in name.split(".")):
                raise ConfigError(f"{key}[{k}]: {name!r} is not a module name such as my_pkg.components")
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as err:
                raise ConfigError(f"{key}[{k}]: module '{name}' not found ({first_line(err)}); it must be importable "
                                  f"from the working directory, the config's folder or the installed packages") from None
            except Exception as err:
                raise ConfigError(f"{key}[{k}]: importing '{name}' failed: {type(err).__name__}: {first_line(err)}") from None
            except SystemExit as err:  # a script's `sys.exit()` at import would end the run without a word
                raise ConfigError(f"{key}[{k}]: importing '{name}' called sys.exit({err.code!r}); a module of components "
                                  f"must not exit when imported") from None
    finally:
        sys.path[:] = saved + [p for p in sys.path if p not in saved]  # keep what the modules added, drop ours
