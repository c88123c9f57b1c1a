"""Name -> factory registries, so users can add components without editing the core."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from scenarios.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of components; each entry may carry a params dataclass used to validate config."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._params: dict[str, type | None] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, params: type | None = None) -> Callable[[T], T]:
        """Decorator: register `obj` under `name`, with an optional params dataclass."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = obj
            self._params[name] = params
            self._docs[name] = ((getattr(obj, "__doc__", None) or "").strip().splitlines() or [""])[0]
            return obj

        return deco

    def get(self, name: str, key: str = "") -> T:
        """Look up `name`; `key` is the config path reported when it is unknown."""
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown {self.kind} '{name}'; registered: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def params_schema(self, name: str) -> type | None:
        return self._params.get(name)

    def describe(self) -> dict[str, str]:
        """Name -> one-line description, for `lifelong-moe list`."""
        return dict(sorted(self._docs.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))


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
        raise ConfigError(f"{key}.{err.full_key}: {_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    msg = getattr(err, "msg", None) or str(err)
    return msg.strip().splitlines()[0]
