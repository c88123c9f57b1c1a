"""A run's results.json, read once and checked for everything `report` and `predict` take from it, so a
damaged or foreign file is one line naming what is wrong, never a traceback where a value is used."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lifelong_moe.errors import ConfigError, first_line

REQUIRED = ("experiment", "model", "strategy", "seed", "scenario", "experiences", "accuracy_matrix", "metrics")
EXPERIENCE = {"name": str, "source": str, "classes": list, "modalities": list, "n_train": int, "n_test": int}
METRIC_NAMES = ("acc", "avg_incremental_acc", "bwt", "fwt", "forgetting")


def read_results(path: Path, command: str, also: Sequence[str] = ()) -> dict[str, Any]:
    """results.json at `path`, checked (keys `also` required besides the usual), for `command`'s messages."""
    results = load_results(path, command)
    refuse_problem(path, results, command, also)
    return results


def load_results(path: Path, command: str | None = None) -> Any:
    """The parsed JSON of a results file, unchecked; unreadable is one line (prefixed by `command` if given)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as err:  # unreadable, not UTF-8, not JSON, nested too deep
        prefix = f"{command}: " if command else ""
        raise ConfigError(f"{prefix}{path} is unreadable ({type(err).__name__}: {first_line(err)[:200]})") from None


def refuse_problem(path: Path, results: Any, command: str | None = None, also: Sequence[str] = ()) -> None:
    """One line naming `path` and what is wrong, where `results_problem` finds something."""
    why = results_problem(results, also)
    if why is not None:
        prefix = f"{command}: " if command else ""
        raise ConfigError(f"{prefix}{path} is not a lifelong-moe results file ({why})")


def results_problem(results: Any, also: Sequence[str] = ()) -> str | None:
    """What makes `results` unfit to read as a run's results, or None."""
    if not isinstance(results, dict):
        return f"not a mapping but a JSON {_kind(results)}"
    missing = [k for k in (*REQUIRED, *also) if k not in results]
    if missing:
        return f"no '{missing[0]}'"
    checks: list[Callable[[dict[str, Any]], str | None]] = [
        _scenario, _experiences, _class_names, _accuracy, _metrics, _parameters, _per_class, _evaluations,
        _contributions, _modalities,  # in this order: each relies on the ones before it
    ]
    return next((why for check in checks if (why := check(results)) is not None), None)


def _scenario(r: dict[str, Any]) -> str | None:
    from scenarios.config import ScenarioKind

    kinds = [k.value for k in ScenarioKind]
    return None if r["scenario"] in kinds else f"scenario is {json.dumps(r['scenario'])[:40]}, not one of {', '.join(kinds)}"


def _experiences(r: dict[str, Any]) -> str | None:
    exps = r["experiences"]
    if not isinstance(exps, list) or not exps or not all(isinstance(e, dict) for e in exps):
        return "experiences is not a list of experiences"
    for k, e in enumerate(exps):
        for key, kind in EXPERIENCE.items():
            if key not in e:
                return f"experiences[{k}] has no '{key}'"
            if not isinstance(e[key], kind) or isinstance(e[key], bool):
                return f"experiences[{k}].{key} is not a {kind.__name__}"
        if not e["classes"] or not all(_is_int(c) and c >= 0 for c in e["classes"]):
            return f"experiences[{k}].classes is not a list of class labels"
        if not all(isinstance(m, str) for m in e["modalities"]):
            return f"experiences[{k}].modalities is not a list of names"
    return None


def _class_names(r: dict[str, Any]) -> str | None:
    names = r.get("class_names")
    if names is None:  # older runs: labels stand for names
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "class_names is not a list of names"
    unnamed = [c for e in r["experiences"] for c in e["classes"] if c >= len(names)]
    return f"class_names names no class {unnamed[0]}" if unnamed else None


def _accuracy(r: dict[str, Any]) -> str | None:
    T, names = len(r["experiences"]), [e["name"] for e in r["experiences"]]
    why = _matrix(r["accuracy_matrix"], "accuracy_matrix")
    if why is None and len(r["accuracy_matrix"]) != T:
        n = len(r["accuracy_matrix"])
        why = f"accuracy_matrix is {n}x{n} but the run has {T} experiences ({', '.join(names)})"
    return why


def _metrics(r: dict[str, Any]) -> str | None:
    m = r["metrics"]
    if not isinstance(m, dict):
        return "metrics is not a mapping"
    for key in METRIC_NAMES:
        if m.get(key) is not None and not _is_number(m[key]):
            return f"metrics.{key} is not a number"
    return _numbers(m.get("seen_acc", []), "metrics.seen_acc", most=len(r["experiences"]))


def _parameters(r: dict[str, Any]) -> str | None:
    if "wall_time_s" in r and not _is_number(r["wall_time_s"]):
        return "wall_time_s is not a number"
    params = r.get("parameters_per_experience") or []
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        return "parameters_per_experience is not a list of mappings"
    for k, p in enumerate(params):
        for key in ("total", "trainable"):
            if key in p and not _is_number(p[key]):
                return f"parameters_per_experience[{k}].{key} is not a number"
    return None


def _per_class(r: dict[str, Any]) -> str | None:
    steps = r.get("per_class") or []
    if not isinstance(steps, list) or len(steps) > len(r["experiences"]):
        return "per_class is not a list of at most one record per experience"
    C = len(r.get("class_names") or []) or 1 + max((c for e in r["experiences"] for c in e["classes"]), default=-1)
    for k, step in enumerate(steps):
        where = f"per_class[{k}]"
        if not step:  # a step resumed from a checkpoint that had no per-class record
            continue
        if not isinstance(step, dict) or any(key not in step for key in ("support", "accuracy", "confusion_matrix")):
            return f"{where} is not a record of support, accuracy and confusion_matrix"
        why = (_numbers(step["support"], f"{where}.support", exactly=C) or _numbers(step["accuracy"], f"{where}.accuracy", exactly=C)
               or _matrix(step["confusion_matrix"], f"{where}.confusion_matrix", allow_none=False))
        if why is None and len(step["confusion_matrix"]) != C:
            why = f"{where}.confusion_matrix is not {C}x{C} (one row and column per class)"
        if why:
            return why
    return None


def _evaluations(r: dict[str, Any]) -> str | None:
    reports = r.get("evaluations") or []
    if not isinstance(reports, list) or not all(isinstance(e, dict) for e in reports):
        return "evaluations is not a list of mappings"
    last, where, T = reports[-1] if reports else {}, f"evaluations[{len(reports) - 1}]", len(r["experiences"])
    if "routing_accuracy" in last and (why := _numbers(last["routing_accuracy"], f"{where}.routing_accuracy", most=T)):
        return why
    if "routing_mass" not in last:
        return None
    if not isinstance(last.get("modalities"), list) or not isinstance(last.get("expert_owner"), list):
        return f"{where} has routing_mass without lists of its modalities and expert_owner"
    shape = (T, len(last["modalities"]), len(last["expert_owner"]))
    if _shape(last["routing_mass"], len(shape)) != shape:
        return f"{where}.routing_mass is not a {'x'.join(map(str, shape))} array of numbers (experiences x modalities x experts)"
    return None


def _contributions(r: dict[str, Any]) -> str | None:
    parts = r.get("contributions") or {}
    if not isinstance(parts, dict) or not all(isinstance(p, dict) for p in parts.values()):
        return "contributions is not a mapping of parts to records"
    for name, part in parts.items():
        for key in ("acc", "bwt"):
            if part.get(key) is not None and not _is_number(part[key]):
                return f"contributions.{name}.{key} is not a number"
        if part.get("accuracy_matrix") and (why := _matrix(part["accuracy_matrix"], f"contributions.{name}.accuracy_matrix", square=False)):
            return why
    return None


def _modalities(r: dict[str, Any]) -> str | None:
    robustness = r.get("modality_evaluation") or {}
    if not isinstance(robustness, dict):
        return "modality_evaluation is not a mapping"
    for group in ("subsets", "missing_rate"):
        entries = robustness.get(group, {})
        if not isinstance(entries, dict) or not all(isinstance(v, dict) and "accuracy" in v for v in entries.values()):
            return f"modality_evaluation.{group} is not a mapping of records with an accuracy"
        if (bad := [k for k, v in entries.items() if v["accuracy"] is not None and not _is_number(v["accuracy"])]):
            return f"modality_evaluation.{group}.{bad[0]}.accuracy is not a number"
    if (bad := [k for k in robustness.get("missing_rate", {}) if not _is_rate(k)]):
        return f"modality_evaluation.missing_rate has {bad[0]!r}, not a rate"
    return None


# ---- values ---------------------------------------------------------------------------------------
def _matrix(value: Any, where: str, square: bool = True, allow_none: bool = True) -> str | None:
    """Rows of numbers (or null) of one length; square where `square`."""
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        return f"{where} is not a list of rows"
    widths = {len(row) for row in value}
    if len(widths) > 1 or (square and widths - {len(value)}):
        shape = f"{len(value)} rows of {', '.join(map(str, sorted(widths)))} entries"
        return f"{where} is not {'square' if square else 'rectangular'} ({shape})"
    for i, row in enumerate(value):
        for j, v in enumerate(row):
            if not (_is_number(v) or (allow_none and v is None)):
                return f"{where}[{i}][{j}] is not a number ({json.dumps(v)[:40]})"
    return None


def _numbers(value: Any, where: str, exactly: int | None = None, most: int | None = None) -> str | None:
    """A list of numbers (or null), of `exactly` or at most `most` entries."""
    if not isinstance(value, list) or not all(v is None or _is_number(v) for v in value):
        return f"{where} is not a list of numbers"
    if (exactly is not None and len(value) != exactly) or (most is not None and len(value) > most):
        return f"{where} has {len(value)} entries, not {exactly if exactly is not None else f'at most {most}'}"
    return None


def _shape(value: Any, depth: int) -> tuple[int, ...] | None:
    """The shape of a nested list of numbers `depth` deep, None where it is ragged or holds anything else."""
    if depth == 0:
        return () if _is_number(value) else None
    if not isinstance(value, list):
        return None
    inner = {_shape(v, depth - 1) for v in value}
    if len(inner) > 1 or None in inner:
        return None
    return (len(value), *(inner.pop() if inner else (0,) * (depth - 1)))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_rate(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _kind(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    names = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)
