"""Load an experiment config from YAML plus dotlist overrides, and check it against the schema.

Only what the check needs is imported here: an unknown key or a wrongly typed value is reported before
torch, Lightning or Avalanche load (registered names and their params load the registries after that)."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lifelong_moe.config.schema import ExperimentConfig
from lifelong_moe.config.values import check_values
from lifelong_moe.config.yaml_input import parse_yaml, read_yaml_file
from lifelong_moe.errors import ConfigError, first_line
from lifelong_moe.features.base import check_pretrained
from lifelong_moe.registry import MODELS, STRATEGIES, resolve_params
from scenarios.plugins import import_modules

MAX_OVERRIDE_CHARS = 10_000


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The validated config: YAML at `path`, then `key=value` overrides; errors name the key path."""
    if not str(path).strip():  # before Path(), which reads "" as "."
        raise ConfigError("config: the config path is empty")
    if "\0" in str(path):
        raise ConfigError(f"config: {str(path)!r} is not a path (it holds a NUL character)")
    path = Path(path)
    raw = read_yaml_file(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got {_type_name(raw)}")
    return config_from_dict(raw, overrides, search=(path.parent,))


def config_from_dict(raw: Any, overrides: Sequence[str] = (), search: Sequence[Path] = ()) -> ExperimentConfig:
    """Merge `raw` and the overrides onto the schema; import the config's `imports` (looked for in `search`
    and the working directory first), then check registered names and their params."""
    parsed = [_parse_override(item) for item in overrides]  # malformed overrides fail before any merge
    _check_sections(raw, ExperimentConfig, "")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), _devices_as_text(raw))
        for key, value in parsed:
            _apply_override(cfg, key, value)
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"{missing[0]}: missing mandatory value")
        obj: ExperimentConfig = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        key = err.full_key or "config"
        raise ConfigError(f"{key}: {first_line(err)}") from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as err:  # e.g. a mapping assigned onto a list
        raise ConfigError(f"config: {first_line(err)}") from None
    except RecursionError:  # e.g. an interpolation that refers to itself
        raise ConfigError("config: an interpolation (${...}) refers to itself") from None
    check_values(obj)  # plain values, before the registries (and torch) load
    import_modules(obj.imports, [*search, Path.cwd()])  # the user's own registrations, before names are looked up
    # names, sources and encoders next: their registries are light, or know their names before they load
    MODELS.check_name(obj.model.name, "model.name")
    STRATEGIES.check_name(obj.strategy.name, "strategy.name")
    check_sources(obj)
    check_pretrained(obj.pretrained)
    for key, registry, component in (("model", MODELS, obj.model), ("strategy", STRATEGIES, obj.strategy)):
        # resolved once, here: the complete params (defaults filled in) are what config.yaml records
        resolved = resolve_params(registry, component.name, component.params, f"{key}.params")
        component.params = dataclasses.asdict(resolved) if resolved is not None else {}
        _check_finite(component.params, f"{key}.params")
    _check_compatible(obj)
    return obj


def check_sources(cfg: ExperimentConfig) -> None:
    """Every `stream.sources.<name>` names a registered kind with valid params (the data itself is read
    when the stream is built)."""
    from scenarios.sources import SOURCES

    for name, src in cfg.stream.sources.items():
        key = f"stream.sources.{name}"
        SOURCES.get(src.kind, f"{key}.kind")
        resolve_params(SOURCES, src.kind, src.params, f"{key}.params")


def _check_compatible(cfg: ExperimentConfig) -> None:
    """A model that routes each training batch to the current experience's experts trains only with
    strategies that feed it that experience's data alone, through the native loop."""
    if MODELS.meta(cfg.model.name).get("routes_by_experience") and not STRATEGIES.meta(cfg.strategy.name).get("current_experience_only"):
        raise ConfigError(
            f"strategy.name: '{cfg.strategy.name}' trains on more than the current experience's data (or through "
            f"Avalanche's loop), but model '{cfg.model.name}' routes each training batch to the current experience's "
            f"experts; use strategy 'naive' with it, or a dense model such as multimodal_mlp")


def _check_finite(params: dict[str, Any], key: str) -> None:
    """No NaN or infinite number among a component's params, nested ones included (a NaN weight or lambda
    trains silently wrong)."""
    for name, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}.{name}: must be a finite number, got {value}")
        if isinstance(value, dict):
            _check_finite(value, f"{key}.{name}")
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, float) and not math.isfinite(item):
                    raise ConfigError(f"{key}.{name}[{i}]: must be a finite number, got {item}")


def _parse_override(item: Any) -> tuple[str, Any]:
    if not isinstance(item, str):
        raise ConfigError(f"override {item!r}: expected key=value text")
    if len(item) > MAX_OVERRIDE_CHARS:
        raise ConfigError(f"override '{item[:40]}...': longer than {MAX_OVERRIDE_CHARS} characters")
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{item}': expected key=value")
    parts = key.split(".")
    if any(not p.strip() for p in parts) or any(c in key for c in "[]\\\n\r\t "):
        raise ConfigError(f"override '{item}': '{key}' is not a key path such as train.epochs or stream.experiences.0.classes")
    # the value is typed as it would be in YAML (numbers, lists, null), by the same bounded reader as files
    parse_yaml(text, f"override '{item}'")
    try:  # OmegaConf's own dotlist grammar, now that the text is known to be safe
        value = OmegaConf.from_dotlist([f"_={text}"])["_"]
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        raise ConfigError(f"override '{item}': {first_line(err)}") from None
    return key, value


def _apply_override(cfg: DictConfig, key: str, value: Any) -> None:
    """Set the dotted `key` (list items by index: stream.experiences.0.classes) to `value`. A list item must
    exist; a new entry of a mapping (`pretrained.text.kind=hf`) is merged in whole, so it starts from its
    defaults and a key still missing is named later; a scalar is refused where a list belongs."""
    *parents, last = key.split(".")
    node: Any = cfg
    where = ""
    for depth, part in enumerate(parents):
        if isinstance(node, ListConfig):
            node, where = node[_list_index(node, part, where)], f"{where}[{part}]"
            continue
        child = node.get(part) if isinstance(node, DictConfig) and part in node else None
        if not isinstance(child, (DictConfig, ListConfig)):  # a new entry, or a section now null: merged in whole
            node.merge_with({part: _nested([*parents[depth + 1:], last], value)})
            return
        node, where = child, f"{where}.{part}" if where else part
    if isinstance(node, ListConfig):
        _list_index(node, last, where)
    elif isinstance(node, DictConfig) and last in node and isinstance(node.get(last), ListConfig) and _not_list(value):
        raise ConfigError(_not_a_list(f"{where}.{last}" if where else last, value))
    OmegaConf.update(cfg, key, _devices_value(key, value), merge=True)


def _list_index(items: ListConfig, part: str, where: str) -> int:
    """The index `part` names in the list at `where`, which must exist (an override cannot add an item)."""
    n = len(items)
    index = int(part) if part.lstrip("-").isdigit() else None
    if index is not None and -n <= index < n:  # -1: the last item, as before the walker
        return index % n
    size = {0: "the list is empty", 1: "the list has 1 item (index 0 or -1)"}.get(n, f"the list has {n} items (indices 0..{n - 1}, or -{n}..-1)")
    raise ConfigError(f"{where}[{part}]: no such item: {size}; to add items, give the whole list")


def _nested(parts: list[str], value: Any) -> Any:
    """`value` under the key path `parts`: ["a", "b"], 1 -> {"a": {"b": 1}}."""
    for part in reversed(parts):
        value = {part: value}
    return value


def _devices_as_text(raw: Any) -> Any:
    """`raw` with `trainer.devices` given as a list ([0, 1]) written as the text the schema's str field holds
    ("[0, 1]"), which `parse_devices` and the Trainer read back as a list of device indices."""
    trainer = raw.get("trainer") if isinstance(raw, dict) else None
    if isinstance(trainer, dict) and isinstance(trainer.get("devices"), list):
        return {**raw, "trainer": {**trainer, "devices": json.dumps(trainer["devices"], default=str)}}
    return raw


def _devices_value(key: str, value: Any) -> Any:
    """An override's value, with a list of devices written as text (see `_devices_as_text`)."""
    if key == "trainer.devices" and isinstance(value, ListConfig):
        return json.dumps(OmegaConf.to_container(value), default=str)
    if key == "trainer" and isinstance(value, DictConfig):
        return _devices_as_text({"trainer": OmegaConf.to_container(value)})["trainer"]
    return value


def _not_list(value: Any) -> bool:
    """A value that cannot stand where a list belongs: a scalar or a mapping (null and "???" are left to the schema)."""
    return value is not None and value != "???" and not isinstance(value, (list, ListConfig))


def _not_a_list(key: str, value: Any) -> str:
    """The error for `value` where a list belongs, with the list to write for a scalar."""
    if isinstance(value, (dict, DictConfig)):
        return f"{key}: expected a list, got a mapping"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{key}: expected a list, got {_type_name(value)} {value!r}; write [{text}]"


def _check_sections(value: Any, schema: Any, key: str) -> None:
    """Where the schema has a section (a mapping of settings), a list or a mapping, the raw config must too, and
    null only where the schema allows it; OmegaConf's own merge error would not say which key. Keys must be names."""
    if value is None:
        if key and not _nullable(schema):  # OmegaConf names only the last key inside a list item
            raise ConfigError(f"{key}: must not be null; expected {_expected(schema)}")
        return
    if dataclasses.is_dataclass(schema):
        if not isinstance(value, dict):
            raise ConfigError(f"{key or 'config'}: expected a mapping of settings, got {_type_name(value)}")
        hints = typing.get_type_hints(schema)
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{key + '.' if key else ''}{k!r}: config keys must be names, got {_type_name(k)} {k!r}")
            if k in hints:
                _check_sections(v, hints[k], f"{key}.{k}" if key else k)
        return
    origin, args = typing.get_origin(schema), typing.get_args(schema)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            _check_sections(value, inner[0], key)
        elif set(inner) == {int, str} and (isinstance(value, bool) or not isinstance(value, (int, str))):
            # OmegaConf names only the index of a list item of a union type: say where it is
            raise ConfigError(f"{key}: expected an integer or a name, got {_type_name(value)} {value!r}")
    elif origin is list and args and dataclasses.is_dataclass(args[0]) and not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of mappings of settings, got {_type_name(value)}")
    elif origin is list and _not_list(value):  # OmegaConf's own error names only the last key inside a list item
        raise ConfigError(_not_a_list(key, value))
    elif origin is list and args and isinstance(value, list):
        for i, item in enumerate(value):
            _check_sections(item, args[0], f"{key}[{i}]")
    elif origin is dict and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {_type_name(value)}")
    elif origin is dict and len(args) == 2:
        for k, item in value.items():
            _check_sections(item, args[1], f"{key}.{k}")


def _nullable(schema: Any) -> bool:
    """Whether the schema's type takes null (Any, or an Optional)."""
    args = typing.get_args(schema) if typing.get_origin(schema) in (typing.Union, types.UnionType) else ()
    return schema is Any or type(None) in args


def _expected(schema: Any) -> str:
    """What a value of type `schema` is, in words."""
    if dataclasses.is_dataclass(schema):
        return "a mapping of settings"
    origin = typing.get_origin(schema)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(schema))
    if origin in (list, dict):
        return "a list" if origin is list else "a mapping"
    if isinstance(schema, type) and issubclass(schema, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in schema)
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(schema, "a value")


def _type_name(value: Any) -> str:
    names = {list: "a list", dict: "a mapping", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML, as saved in the run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_container(cfg: ExperimentConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)  # type: ignore[return-value]


__all__ = ["config_from_dict", "load_config", "to_container", "to_yaml"]
