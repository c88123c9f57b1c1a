"""The Measured results page of the documentation (docs/results.md), written from what the studies left under
experiments/results/, so that every number on it stands under the command and the code that produced it:

    python experiments/results_page.py [--results experiments/results] [--out docs/results.md]

Every markdown table a study wrote (experiments/results/<study>/**/*.md: summary.md, comparison.md,
transfer.md, ...; run folders `runs/` skipped) is printed under a heading naming its file, with the
provenance of the nearest provenance.json in its folder or above it, up to the study's folder:

    {"command": "python experiments/class_incremental.py --seeds 3", "commit": "954f419",
     "date": "2026-12-01", "machine": "2-core CPU, one thread per run", "note": "optional"}

A table with no provenance.json above it came from older code: the page names it under "Not re-run with the
current code", without its numbers. The page ends with the scripts under experiments/, each with the first
paragraph of its docstring. Standard library only, so it runs in a second."""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROVENANCE = "provenance.json"
REQUIRED = ("command", "commit", "date", "machine")
HELPERS = {"timing.py", "results_page.py"}  # scripts that measure nothing themselves


class ProvenanceError(ValueError):
    """A provenance.json that cannot say where its tables came from (one line, naming the file)."""


@dataclass(frozen=True)
class Provenance:
    command: str
    commit: str
    date: str
    machine: str
    note: str = ""

    def line(self) -> str:
        return f"Command: `{self.command}` · code: commit `{self.commit}` · {self.date} · {self.machine}"


@dataclass(frozen=True)
class Table:
    study: str
    path: Path  # relative to the study's folder
    text: str
    provenance: Provenance | None
    figures: tuple[str, ...]  # PNG files beside the table


def read_provenance(path: Path) -> Provenance:
    """The provenance in `path`; ProvenanceError naming the file and the key at fault."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProvenanceError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ProvenanceError(f"{path}: expected an object with keys {', '.join(REQUIRED)}")
    for key in REQUIRED:
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ProvenanceError(f"{path}: '{key}' must be a non-empty string")
    if not re.fullmatch(r"[0-9a-f]{7,40}", raw["commit"]):
        raise ProvenanceError(f"{path}: 'commit' must be a commit hash (7-40 hex digits), got '{raw['commit']}'")
    unknown = sorted(set(raw) - {*REQUIRED, "note"})
    if unknown:
        raise ProvenanceError(f"{path}: unknown keys {unknown}; expected {', '.join((*REQUIRED, 'note'))}")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise ProvenanceError(f"{path}: 'note' must be a string")
    return Provenance(*(raw[k].strip() for k in REQUIRED), note.strip())


def _nearest_provenance(folder: Path, study_dir: Path) -> Path | None:
    """The provenance.json in `folder` or the closest folder above it, up to `study_dir`."""
    while True:
        if (folder / PROVENANCE).is_file():
            return folder / PROVENANCE
        if folder == study_dir:
            return None
        folder = folder.parent


def collect(results_dir: Path) -> list[Table]:
    """Every table under every study of `results_dir`, studies by name, each study's top-level tables first."""
    tables = []
    for study_dir in sorted(p for p in results_dir.iterdir() if p.is_dir() and p.name != "runs"):
        found = [p for p in study_dir.rglob("*.md") if "runs" not in p.relative_to(study_dir).parts]
        for md in sorted(found, key=lambda p: (len(p.relative_to(study_dir).parts) > 1, str(p.relative_to(study_dir)))):
            source = _nearest_provenance(md.parent, study_dir)
            figures = tuple(sorted(p.name for p in md.parent.glob("*.png")))
            tables.append(Table(study_dir.name, md.relative_to(study_dir), md.read_text(),
                                read_provenance(source) if source else None, figures))
    return tables


def _demoted(markdown: str, by: int) -> str:
    """Headings inside an included file moved `by` levels down (at most level 6), so they nest under ours."""
    out, fenced = [], False
    for line in markdown.rstrip().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = re.match(r"^(#{1,6})\s", line)
        if m and not fenced:
            line = "#" * min(6, len(m.group(1)) + by) + line[len(m.group(1)):]
        out.append(line)
    return "\n".join(out)


def _shown(path: Path) -> str:
    """A path as the page shows it: relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def scripts(scripts_dir: Path) -> list[tuple[str, str]]:
    """(file name, first paragraph of its docstring) for each study or benchmark script."""
    out = []
    for path in sorted(scripts_dir.glob("*.py")):
        if path.name in HELPERS:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        out.append((path.name, first[:-1] + "." if first.endswith(":") else first))
    return out


def render(results_dir: Path, scripts_dir: Path = HERE) -> str:
    """The whole page."""
    tables = collect(results_dir)
    current = [t for t in tables if t.provenance]
    old = [t for t in tables if not t.provenance]
    where = _shown(results_dir)
    lines = [
        "# Measured results", "",
        f"<!-- Generated by `python experiments/results_page.py` from {where}/ and the scripts' docstrings; "
        "do not edit by hand. -->", "",
        "What the methods achieve, as the study scripts under `experiments/` measured it. Each table stands under",
        "the command that produced it and the commit of the code that ran, read from the `provenance.json` of its",
        "study; a study's figures lie beside its tables. Tables of studies that were not re-run with the current",
        "code are named at the end, without their numbers.", "",
        "To add a study: run its script, write `provenance.json` in its folder under",
        f"`{where}/` (`command`, `commit`, `date`, `machine`, optionally `note`), and regenerate this page",
        "with `python experiments/results_page.py`. How the comparisons are made fair:",
        "[Compare methods](compare.md#a-fair-comparison); what the metrics mean:",
        "[Read the results](read-results.md#metrics).", "",
        "## Re-run with the current code", "",
    ]
    if not current:
        lines += ["None yet.", ""]
    study = None
    for t in current:
        if t.study != study:
            study = t.study
            lines += [f"### {study}", ""]
        assert t.provenance is not None
        lines += [f"#### {study}/{t.path.as_posix()}", "", t.provenance.line(), ""]
        if t.provenance.note:
            lines += [f"Note: {t.provenance.note}", ""]
        lines += [_demoted(t.text, 4), ""]
        if t.figures:
            folder = f"{where}/{study}/{t.path.parent.as_posix()}".removesuffix("/.")
            lines += ["Figures: " + ", ".join(f"`{folder}/{f}`" for f in t.figures), ""]
    lines += ["## Not re-run with the current code", ""]
    if not old:
        lines += ["None.", ""]
    else:
        lines += ["These tables came from older code and have no provenance; their numbers are not shown here.", ""]
        by_study: dict[str, list[str]] = {}
        for t in old:
            by_study.setdefault(t.study, []).append(t.path.as_posix())
        lines += [f"- `{s}`: " + ", ".join(f"`{p}`" for p in paths) for s, paths in by_study.items()] + [""]
    lines += ["## The scripts", "",
              "Each prints what it measures and, for the studies, writes its tables under "
              f"`{where}/`; the command line of each is in its docstring.", ""]
    lines += [f"- `experiments/{name}`: {doc}" for name, doc in scripts(scripts_dir)]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=HERE / "results", help="the studies' folder")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md", help="the page to write")
    args = ap.parse_args(argv)
    if not args.results.is_dir():
        print(f"results_page: error: --results: {args.results} is not a folder", file=sys.stderr)
        return 2
    try:
        page = render(args.results)
    except ProvenanceError as e:
        print(f"results_page: error: {e}", file=sys.stderr)
        return 2
    args.out.write_text(page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
