"""The package's layers: every module imports first in a fresh interpreter, `scenarios` knows nothing of
`lifelong_moe`, and no module imports from a layer above its own (lazy imports inside functions count;
imports only for type checkers do not)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import from its own layer and those below. The longest matching prefix decides.
LAYERS: list[tuple[str, ...]] = [
    ("scenarios",),
    ("lifelong_moe.errors", "lifelong_moe.offline", "lifelong_moe.registry", "lifelong_moe.metrics", "lifelong_moe.distributed"),
    ("lifelong_moe.config.schema", "lifelong_moe.config.values", "lifelong_moe.config.yaml_input", "lifelong_moe.reporting.files",
     "lifelong_moe.features.base", "lifelong_moe.interrupts"),
    ("lifelong_moe.config", "lifelong_moe.moe", "lifelong_moe.statistics"),
    ("lifelong_moe.models", "lifelong_moe.features"),
    ("lifelong_moe.training", "lifelong_moe.checkpointing", "lifelong_moe.reporting"),
    ("lifelong_moe.evaluation", "lifelong_moe.strategies"),
    ("lifelong_moe.run_state", "lifelong_moe.preparation", "lifelong_moe.run_outputs"),
    ("lifelong_moe.runner", "lifelong_moe.tuning", "lifelong_moe.compare", "lifelong_moe.predict", "lifelong_moe.reporting.report"),
    ("lifelong_moe.cli", "lifelong_moe.plugins", "lifelong_moe"),
]


def modules() -> list[str]:
    out = []
    for package in ("lifelong_moe", "scenarios"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def layer(module: str) -> int:
    best, best_len = None, -1
    for k, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = k, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def project_imports(module: str) -> set[str]:
    """Every project module `module` imports, at any depth of its code, except under `if TYPE_CHECKING:`."""
    path = ROOT / Path(*module.split("."))
    source = (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(source.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n for n in names if n.split(".")[0] in ("lifelong_moe", "scenarios")}
    return found


def test_scenarios_imports_nothing_from_lifelong_moe() -> None:
    offenders = {m: sorted(i for i in project_imports(m) if i.startswith("lifelong_moe")) for m in modules() if m.startswith("scenarios")}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = {}
    for m in modules():
        above = sorted(i for i in project_imports(m) if layer(i) > layer(m))
        if above:
            upward[m] = above
    assert upward == {}


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    """One interpreter, but before each module every project module is forgotten, so each is the first
    project import (third-party packages stay loaded: a cycle can only run through our own modules)."""
    probe = """
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m.split('.')[0] in ('lifelong_moe', 'scenarios')]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as err:
        failed[name] = f"{type(err).__name__}: {err}"
print(json.dumps(failed))
"""
    proc = subprocess.run([sys.executable, "-c", probe, json.dumps(modules())], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}
