"""Name -> component registries, so a user adds a data source, model, strategy, encoder, communication
mode or growth policy by registering it, without editing the core.

Each registry knows the module that registers its built-in entries and imports it on first use, so no
caller has to remember to load the built-ins first, and `--help` never pays for torch or Avalanche."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from scenarios.errors import ConfigError, first_line

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of components; each entry may carry a params dataclass used to validate config,
    and free-form metadata (e.g. whether a model is a dense backbone)."""

    def __init__(self, kind: str, builtins: tuple[str, ...] = (), names: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._builtins = builtins
        self._names = frozenset(names)  # the built-ins' names, known before their (heavy) modules load
        self._loaded = False  # built-ins and installed plugins (entry points) load on first use
        self._entries: dict[str, T] = {}
        self._params: dict[str, type | None] = {}
        self._docs: dict[str, str] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before importing: the modules register into this very registry
            for module in self._builtins:
                importlib.import_module(module)
            builtin = {n for n, obj in self._entries.items() if getattr(obj, "__module__", "").startswith(self._builtins)}
            if self._names and builtin != self._names:
                raise RuntimeError(f"the built-in {self.kind}s are {sorted(builtin)}, but the registry declares "
                                   f"{sorted(self._names)}: update `names` where it is created")
            from scenarios.plugins import load_entry_points

            load_entry_points()  # installed plugins register after the built-ins, into any registry

    def check_name(self, name: str, key: str = "") -> None:
        """`name` is registered, checked without loading the built-ins where their names are declared (so a
        mistyped name is reported before torch or Avalanche load); the error suggests the closest name."""
        if name in self._entries or (not self._loaded and name in self._names):
            return
        from scenarios.plugins import load_entry_points

        load_entry_points()  # an installed plugin's name (fast when none is installed)
        if not self._names or name in self._entries:
            self.get(name, key)
            return
        known = sorted(set(self._entries) | (self._names if not self._loaded else set()))
        raise ConfigError(unknown_name(f"{key}: " if key else "", self.kind, name, known))

    def register(self, name: str, params: type | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator: register `obj` under `name`, with an optional params dataclass and metadata."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = obj
            self._params[name] = params
            doc = getattr(obj, "doc", None) if isinstance(getattr(obj, "doc", None), str) else None
            self._docs[name] = " ".join((doc or getattr(obj, "__doc__", None) or "").strip().split("\n\n")[0].split())
            self._meta[name] = dict(meta)
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register components of their own clean up with this)."""
        for table in (self._entries, self._params, self._docs, self._meta):
            table.pop(name, None)

    def get(self, name: str, key: str = "") -> T:
        """Look up `name`; `key` is the config path reported when it is unknown."""
        self._load()
        if name not in self._entries:
            raise ConfigError(unknown_name(f"{key}: " if key else "", self.kind, name, sorted(self._entries)))
        return self._entries[name]

    def params_schema(self, name: str) -> type | None:
        self._load()
        return self._params.get(name)

    def meta(self, name: str) -> dict[str, Any]:
        self._load()
        return self._meta.get(name, {})

    def describe(self) -> dict[str, str]:
        """Name -> description (the first paragraph of its docstring, as one line), for `lifelong-moe list`."""
        self._load()
        return dict(sorted(self._docs.items()))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(sorted(self._entries))


def unknown_name(where: str, kind: str, name: str, known: list[str]) -> str:
    """`<where>unknown <kind> '<name>'; did you mean '<closest>'? registered: ...`"""
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{where}unknown {kind} '{name}'{hint}; registered: {', '.join(known)}"


def resolve_params(registry: Registry[Any], name: str, params: Any, key: str) -> Any:
    """Validate a `params` mapping against the registered schema; errors name `key.<field>`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = registry.params_schema(name)
    raw = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else (params or {})
    if schema is None:
        if raw:
            raise ConfigError(f"{key}: {registry.kind} '{name}' takes no params, got {sorted(raw)}")
        return None
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), raw)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}.{err.full_key}: {first_line(err)}") from None
