"""Bounded YAML input. A config file and every override value are read by a loader that refuses what
would let a few bytes cost a lot or mean two things, before OmegaConf sees them:

- anchors and aliases (`&a`, `*a`): OmegaConf's merge expands shared nodes, so a few hundred bytes of
  nested aliases become gigabytes;
- nesting deeper than `MAX_DEPTH` (the composer recurses per level) and more than `MAX_NODES` nodes;
- files over `MAX_BYTES`, and text that is not UTF-8;
- a key given twice in one mapping (YAML keeps the last one silently).

Errors are `ConfigError`s naming the file (or override) and the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lifelong_moe.errors import ConfigError, first_line

MAX_BYTES = 1 << 20  # a config of 1 MiB is already far beyond any hand-written experiment
MAX_DEPTH = 40  # the deepest shipped config nests 6 levels
MAX_NODES = 100_000


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (plain data only, no Python objects) with the bounds above."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"alias '*{event.anchor}' is not supported (write the value out instead)", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _Refused(f"anchor '&{event.anchor}' is not supported (aliases are refused; write values out)", event.start_mark)
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        if self._nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} values", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    raise _Refused(f"duplicate key '{key_node.value}'", key_node.start_mark)
                seen.add(ident)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """Plain data from YAML `text`; errors are one line starting with `where` (a file or an override)."""
    try:
        return yaml.load(text, Loader=BoundedLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or first_line(err)
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None
    except RecursionError:  # a bound above should come first; never let it become a traceback
        raise ConfigError(f"{where}: invalid YAML: nested too deeply") from None


def read_yaml_file(path: Path) -> Any:
    """The parsed content of a config file, after checking it is a regular, readable, bounded UTF-8 file."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file")
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or type(err).__name__})") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES // 1024} KiB; a config file is a short YAML text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start} is 0x{data[err.start]:02x}); save the config as UTF-8") from None
    return parse_yaml(text, str(path))
