"""experiments/results_page.py: the Measured results page shows a study's tables only under the command and the
commit that produced them (from its provenance.json), names the studies without provenance without their
numbers, refuses a provenance that cannot say where its numbers came from, and docs/results.md is what it
writes from the repository's experiments/results/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "results_page.py"
PROVENANCE = {"command": "python experiments/alpha.py --seeds 3", "commit": "0123abcd", "date": "2026-12-01",
              "machine": "2-core CPU, one thread", "note": "re-run after the gate change"}
LINE = ("Command: `python experiments/alpha.py --seeds 3` · code: commit `0123abcd` · 2026-12-01 · "
        "2-core CPU, one thread")


def _table(value: str) -> str:
    return f"| strategy | ACC |\n|---|---|\n| moe | {value} |\n\nMean ± standard deviation over 3 seeds.\n"


def _results(tmp_path: Path) -> Path:
    """alpha: re-run (provenance), a summary and one stream's comparison with a figure and a stray run folder;
    beta: old tables, no provenance."""
    results = tmp_path / "results"
    (results / "alpha" / "stream1" / "runs" / "moe").mkdir(parents=True)
    (results / "alpha" / "provenance.json").write_text(json.dumps(PROVENANCE))
    (results / "alpha" / "summary.md").write_text(_table("0.911 ± 0.004"))
    (results / "alpha" / "stream1" / "comparison.md").write_text(_table("0.822 ± 0.010"))
    (results / "alpha" / "stream1" / "final_accuracy.png").write_bytes(b"\x89PNG")
    (results / "alpha" / "stream1" / "runs" / "moe" / "comparison.md").write_text(_table("0.555"))
    (results / "beta" / "stream2").mkdir(parents=True)
    (results / "beta" / "summary.md").write_text(_table("0.733 ± 0.020"))
    (results / "beta" / "stream2" / "comparison.md").write_text(_table("0.644 ± 0.030"))
    return results


def _run(results: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--results", str(results), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)


def test_tables_stand_under_their_command_and_commit(tmp_path):
    out = tmp_path / "results.md"
    proc = _run(_results(tmp_path), out)
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    current, old = page.split("## Not re-run with the current code")
    # every table of alpha, each under its own heading and the provenance line, once per table
    assert current.count(LINE) == 2
    assert current.count("Note: re-run after the gate change") == 2
    summary = current.index("#### alpha/summary.md")
    stream = current.index("#### alpha/stream1/comparison.md")
    assert summary < current.index(LINE, summary) < current.index("| moe | 0.911 ± 0.004 |") < stream
    assert stream < current.index(LINE, stream) < current.index("| moe | 0.822 ± 0.010 |")
    assert "final_accuracy.png" in current[stream:]
    # a run folder's table is not a study's table
    assert "0.555" not in page
    # beta: named, without a single number
    assert "`beta`: `summary.md`, `stream2/comparison.md`" in old
    for number in ("0.733", "0.644", "0.020", "0.030"):
        assert number not in page
    assert "beta" not in current


def test_provenance_in_a_sub_folder_covers_only_that_folder(tmp_path):
    results = _results(tmp_path)
    (results / "beta" / "stream2" / "provenance.json").write_text(json.dumps({**PROVENANCE, "commit": "fedcba9"}))
    out = tmp_path / "results.md"
    assert _run(results, out).returncode == 0
    current, old = out.read_text().split("## Not re-run with the current code")
    assert "| moe | 0.644 ± 0.030 |" in current and "commit `fedcba9`" in current
    assert "`beta`: `summary.md`" in old and "0.733" not in current + old


def test_a_provenance_without_its_commit_is_refused_and_nothing_is_written(tmp_path):
    results = _results(tmp_path)
    out = tmp_path / "results.md"
    out.write_text("before\n")
    for bad, key in (({k: v for k, v in PROVENANCE.items() if k != "commit"}, "'commit'"),
                     ({**PROVENANCE, "commit": "HEAD"}, "'commit'"),
                     ({**PROVENANCE, "machine": ""}, "'machine'")):
        (results / "alpha" / "provenance.json").write_text(json.dumps(bad))
        proc = _run(results, out)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "alpha/provenance.json" in lines[0] and key in lines[0], proc.stderr
        assert out.read_text() == "before\n"


def test_docs_results_page_is_up_to_date(tmp_path):
    out = tmp_path / "results.md"
    proc = _run(ROOT / "experiments" / "results", out)
    assert proc.returncode == 0, proc.stderr
    assert (ROOT / "docs" / "results.md").read_text() == out.read_text(), "regenerate: python experiments/results_page.py"
