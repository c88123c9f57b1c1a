"""What a config can name, and what each name takes: every registry's components with their parameters
(type, default, one line of help), generated from the params dataclasses, for `lifelong-moe list` and the
config reference in docs/.

Help comes from the comment on a field's line (and comment lines right below it, which continue it), the
way the dataclasses are written anyway, so documentation and code stay in one place:

    epochs: int = 5  # passes over each experience's training data
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from lifelong_moe.errors import ConfigError
from scenarios.registry import Registry, unknown_name


@dataclass(frozen=True)
class Param:
    """One parameter of a component (or key of the config): dotted name, type, default and help."""

    name: str
    type: str
    default: str
    help: str


@dataclass(frozen=True)
class Kind:
    """A kind of component `lifelong-moe list KIND` shows: where its registry lives and the config key that names it."""

    title: str
    registry: str  # "module:NAME"
    key: str  # where a config names one, e.g. model.name
    imports: tuple[str, ...] = ()  # modules that register the built-ins, for registries that do not load their own
    has_params: bool = True  # whether its components take a `params` block


KINDS: dict[str, Kind] = {
    "sources": Kind("data sources", "scenarios.sources.base:SOURCES", "stream.sources.<name>.kind"),
    "models": Kind("models", "lifelong_moe.registry:MODELS", "model.name"),
    "strategies": Kind("strategies", "lifelong_moe.registry:STRATEGIES", "strategy.name"),
    "encoders": Kind("pretrained encoders", "lifelong_moe.features.base:EXTRACTORS", "pretrained.<modality>.kind"),
    "modality-encoders": Kind("modality encoders (trainable, one per modality kind)", "lifelong_moe.models.encoders:ENCODERS",
                              "a modality's kind", has_params=False),
    "growth": Kind("growth policies of the MoE", "lifelong_moe.moe.growth:GROWTH", "model.params.growth",
                   ("lifelong_moe.moe.growth",), has_params=False),
    "communication": Kind("communication modes of the MoE's experts", "lifelong_moe.moe.communication:COMMUNICATION",
                          "model.params.communication", ("lifelong_moe.moe.communication",), has_params=False),
}
ALIASES = {"source": "sources", "model": "models", "strategy": "strategies", "encoder": "encoders", "pretrained": "encoders",
           "modality_encoders": "modality-encoders", "communications": "communication"}


def registry(kind: str) -> Registry[Any]:
    """The registry of a kind (`sources`, `models`, ...), its built-ins loaded."""
    spec = KINDS[canonical(kind)]
    for module in spec.imports:
        importlib.import_module(module)
    module, name = spec.registry.split(":")
    return getattr(importlib.import_module(module), name)


def canonical(kind: str) -> str:
    """`kind` as a key of KINDS (singular and other spellings accepted); a ConfigError suggests the closest."""
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ConfigError(unknown_name("list: ", "kind", kind, sorted(KINDS)))
    return kind


def components(kind: str) -> dict[str, str]:
    """Name -> one-line description of every component of a kind."""
    return registry(kind).describe()


def params_of(kind: str, name: str) -> list[Param]:
    """The parameters of one registered component ([] if it takes none)."""
    reg = registry(kind)
    reg.get(name, KINDS[canonical(kind)].key)
    schema = reg.params_schema(name)
    return parameters(schema) if schema is not None else []


def parameters(cls: type, prefix: str = "") -> list[Param]:
    """Every field of a dataclass as a Param; a field whose type is itself a dataclass is listed field by field
    under its name (`tokenizer.kind`, ...)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += parameters(hint, f"{prefix}{f.name}.")
            continue
        out.append(Param(f"{prefix}{f.name}", type_name(hint), default_text(f), docs.get(f.name, "")))
    return out


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its help: the comment on the field's line, joined with the comment-only lines below it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where no source is at hand (e.g. interactively)
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    comments: dict[int, str] = {}  # line number -> the comment on it
    code_lines: set[int] = set()  # lines holding code (not only a comment)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    lines = source.splitlines()
    body = _body_indent(lines)
    docs: dict[str, str] = {}
    current: str | None = None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if number not in code_lines:  # a comment-only or blank line: continues the field above, if it had help
            if current is not None and number in comments and stripped.startswith("#"):
                docs[current] = f"{docs[current]} {comments[number]}".strip()
            elif not stripped:
                current = None
            continue
        current = None
        indent = len(line) - len(line.lstrip())
        name = stripped.split(":", 1)[0].strip()
        if indent == body and name in names and ":" in stripped:
            last = _statement_end(lines, number, code_lines)
            text = " ".join(comments[n] for n in range(number, last + 1) if n in comments)
            docs[name] = _clean(text)
            current = name if text else None
    return docs


def _body_indent(lines: list[str]) -> int:
    """The indentation of the class body (the first line after `class ...:` that holds more than a comment)."""
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("class "))
    for line in lines[start + 1:]:
        if line.strip() and not line.strip().startswith("#"):
            return len(line) - len(line.lstrip())
    return 4


def _statement_end(lines: list[str], start: int, code_lines: set[int]) -> int:
    """The last line of the statement starting at `start` (a default that spans lines in brackets)."""
    depth, number = 0, start
    while number <= len(lines):
        text = lines[number - 1].split("#", 1)[0]
        depth += sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")
        if depth <= 0:
            return number
        number += 1
    return start


def _clean(text: str) -> str:
    """A comment as help: code-style noqa and type-ignore remarks dropped."""
    for marker in ("type: ignore", "noqa"):
        if marker in text:
            text = text.split(marker, 1)[0].rstrip(" [(#")
    return " ".join(text.split())


def type_name(hint: Any) -> str:
    """`int`, `list[float]`, `str | None`, `dict[str, Any]`: a type as a config author reads it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if hint is type(None):
        return "None"
    if hint is Any:
        return "Any"
    if isinstance(hint, type) and issubclass(hint, __import__("enum").Enum):
        return " | ".join(str(m.value) for m in hint)
    return getattr(hint, "__name__", str(hint))


def default_text(f: dataclasses.Field) -> str:
    """The default as YAML would show it; `(required)` where there is none."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value == "???":
        return "(required)"
    return yaml_value(value)


def yaml_value(value: Any) -> str:
    import enum

    if isinstance(value, enum.Enum):
        value = value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def params_table(params: list[Param], indent: str = "    ") -> str:
    """Aligned plain-text lines: name, type, default, help."""
    if not params:
        return f"{indent}(no parameters)"
    w_name = max(len(p.name) for p in params)
    w_type = min(max(len(p.type) for p in params), 28)
    w_default = min(max(len(p.default) for p in params), 24)
    return "\n".join(f"{indent}{p.name:<{w_name}}  {p.type:<{w_type}}  {p.default:<{w_default}}  {p.help}".rstrip()
                     for p in params)


# ---- the config reference (docs/config-reference.md) -------------------------------------------------
def config_keys(cls: type | None = None, prefix: str = "") -> list[Param]:
    """Every key of the experiment config, once: sections are walked (`train.epochs`), mappings of sections
    get a placeholder (`pretrained.<modality>.kind`), lists of sections an index (`stream.experiences[].classes`).
    A `params` block is listed once; what it holds depends on the component, listed after the keys."""
    from lifelong_moe.config.schema import ExperimentConfig

    cls = cls or ExperimentConfig
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[Param] = []
    for f in dataclasses.fields(cls):
        key, hint = f"{prefix}{f.name}", hints[f.name]
        inner = _section(hint)
        if inner is not None:
            section, suffix = inner
            suffix = suffix.replace("<name>", _PLACEHOLDERS.get(f.name, "<name>"))
            out.append(Param(key, _section_kind(hint), "(keys below)", docs.get(f.name, "")))
            out += config_keys(section, f"{key}{suffix}.")
        else:
            out.append(Param(key, type_name(hint), default_text(f), docs.get(f.name, "")))
    return out


_PLACEHOLDERS = {"sources": "<name>", "pretrained": "<modality>"}


def _section(hint: Any) -> tuple[type, str] | None:
    """(the dataclass a key holds, how its keys continue) for a section, a list of them or a mapping of them."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return hint, ""
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _section(inner[0]) if len(inner) == 1 else None
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return args[0], "[]"
    if origin is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return args[1], ".<name>"
    return None


def _section_kind(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list:
        return "list of sections"
    if origin is dict:
        return "mapping of sections"
    return "section" if dataclasses.is_dataclass(hint) else "section or null"


def config_reference() -> str:
    """docs/config-reference.md: every config key once, then every component's params."""

    def table(params: list[Param], first: str) -> list[str]:
        rows = [f"| {first} | type | default | what it sets |", "|---|---|---|---|"]
        rows += [f"| `{p.name}` | `{p.type}` | `{p.default}` | {_md(p.help)} |" for p in params]
        return rows

    keys = config_keys()
    lines = ["# Config reference", "",
             "Generated from the config's dataclasses (`lifelong_moe/config/schema.py`, `scenarios/config.py`) and every",
             "registered component's params dataclass by `python -m lifelong_moe.catalog docs/config-reference.md`; do not",
             "edit by hand. The same tables, per component: `lifelong-moe list KIND [NAME]`.", "",
             "## Keys", "", *table(keys, "key"), ""]
    for kind, spec in KINDS.items():
        if not spec.has_params:
            continue
        lines += [f"## {spec.title[0].upper()}{spec.title[1:]}", "",
                  f"Chosen by `{spec.key}`; their settings go under its `params`.", ""]
        for name, doc in components(kind).items():
            lines += [f"### `{name}`", "", _md(doc), ""]
            params = params_of(kind, name)
            lines += [*table(params, "param"), ""] if params else ["No parameters.", ""]
    return "\n".join(lines).rstrip() + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    """`python -m lifelong_moe.catalog PATH`: write the config reference to PATH."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lifelong_moe.catalog docs/config-reference.md", file=sys.stderr)
        return 2
    from pathlib import Path

    Path(args[0]).write_text(config_reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
