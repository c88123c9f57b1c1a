"""`lifelong-moe report`: one self-contained HTML page per run and per comparison, every section present,
every figure embedded, nothing fetched from anywhere; rendered in headless Chromium where it is installed.
Also the figures and tables it shares with the run: forgetting curves start where an experience is trained,
and a one-seed comparison shows no spread."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from battery import one_line_error
from conftest import tiny_config
from lifelong_moe import config_from_dict, run
from lifelong_moe.cli import main

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from lifelong_moe.compare import compare

    tmp = tmp_path_factory.mktemp("report")
    cfg = tiny_config(tmp / "runs", model={"name": "moe"})
    cfg["train"] = {"epochs": 2, "batch_size": 16, "lr": 0.01}
    single = run(config_from_dict(cfg), progress=lambda _: None).run_dir
    one_seed = compare(config_from_dict(cfg), ["moe", "naive"], seeds=1, progress=lambda _: None)
    two_seeds = compare(config_from_dict(cfg), ["moe", "replay"], seeds=2, progress=lambda _: None)
    return {"run": single, "one_seed": one_seed, "two_seeds": two_seeds}


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def _offline(page: str) -> None:
    """Nothing the page would load comes from elsewhere: no http(s) in src/href, no scripts, no style sheets."""
    assert not re.findall(r'(?:src|href)\s*=\s*["\']?\s*(?:https?:)?//', page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page and "url(" not in page
    for src in re.findall(r'src="([^"]+)"', page):
        assert src.startswith("data:image/png;base64,")


def test_run_report_holds_every_section_with_figures_embedded(runs, capsys):
    assert main(["report", str(runs["run"])]) == 0
    assert "report: " in capsys.readouterr().out
    page = (runs["run"] / "report.html").read_text()
    assert _sections(page) == ["summary", "experiences", "accuracy", "classes", "routing", "contributions", "modalities", "config"]
    _offline(page)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 6  # accuracy matrix, forgetting curves, confusion, per class, routing, modalities
    import base64
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((runs["run"] / "results.json").read_text())
    assert f"{res['metrics']['acc']:.3f}" in page and "name: tiny" in page  # the summary and the config
    assert "routing accuracy" in page


def test_contributions_are_rendered_for_whatever_parts_are_present(runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["run"], run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    res["contributions"] = {"statistics": {"acc": 0.81, "bwt": -0.02, "accuracy_matrix": [[0.9, 0.0], [0.85, 0.77]]},
                            "model": {"acc": 0.9, "bwt": 0.0, "accuracy_matrix": [[1.0, 0.0], [1.0, 0.8]]}}
    (run_dir / "results.json").write_text(json.dumps(res))
    from lifelong_moe.reporting.report import write_report

    page = write_report(run_dir, tmp_path / "page.html").read_text()
    assert "contributions" in _sections(page)
    table = page.split('<section id="contributions">')[1].split("</section>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    cells = [re.findall(r">([^<]*)</t[dh]>", r) for r in rows]
    assert cells[0] == ["part", "ACC", "BWT", "final on exp0", "final on exp1"]
    assert cells[1] == ["statistics", "0.810", "-0.020", "0.850", "0.770"] and cells[2] == ["model", "0.900", "0.000", "1.000", "0.800"]


def test_a_real_runs_contributions_show_each_parts_final_accuracies(runs):
    """The page reads each part's accuracy matrix as the run writes it (`metrics.contributions`): the final row."""
    from lifelong_moe.reporting.report import write_report

    parts = json.loads((runs["run"] / "results.json").read_text())["contributions"]
    page = write_report(runs["run"], runs["run"].parent / "contributions.html").read_text()
    table = page.split('<section id="contributions">')[1].split("</section>")[0]
    cells = {r[0]: r[3:] for r in (re.findall(r">([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)) if r}
    assert set(cells) == set(parts)
    for name, record in parts.items():
        assert cells[name] == [f"{v:.3f}" for v in record["accuracy_matrix"][-1]]


@pytest.mark.parametrize("damage", ["[1, 2]", '{"status": "complete", "accuracy_matrix": [[1.0]]}', "{"])
def test_a_comparison_with_a_damaged_run_is_one_line(runs, tmp_path, capsys, damage):
    """One run's results.json inside a comparison, damaged: `report` names it in one line (it was a traceback)."""
    out = tmp_path / "cmp"
    shutil.copytree(runs["two_seeds"], out)
    damaged = sorted(out.glob("*/*/results.json"))[0]
    damaged.write_text(damage)
    line = one_line_error(main, ["report", str(out)], capsys, str(damaged))
    assert "not a lifelong-moe results file" in line or "unreadable" in line


def test_comparison_report_holds_the_table_with_spreads(runs):
    from lifelong_moe.reporting.report import write_report

    page = write_report(runs["two_seeds"]).read_text()
    assert _sections(page) == ["table", "figures", "matrices", "contributions", "experiences", "config"]
    _offline(page)
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 4  # two comparison figures, two matrices
    table = page.split('<section id="table">')[1].split("</section>")[0]
    assert table.count("<tr>") == 3 and ">moe<" in table and ">replay<" in table
    assert len(re.findall(r"\d\.\d{3} ± \d\.\d{3}", table)) == 10  # 5 metrics x 2 methods, with their spread


def test_a_one_seed_table_shows_no_spread(runs):
    from lifelong_moe.reporting.report import write_report

    md = (runs["one_seed"] / "comparison.md").read_text()
    assert "±" not in md and "One seed per method" in md
    page = write_report(runs["one_seed"]).read_text()
    assert "±" not in page.split('<section id="table">')[1].split("</section>")[0]


def test_a_metric_the_runs_did_not_measure_reads_n_a():
    from lifelong_moe.compare import spread

    assert spread(float("nan"), float("nan"), 3) == "n/a"  # FWT without evaluate_untrained
    assert spread(0.5, 0.01, 3) == "0.500 ± 0.010" and spread(0.5, 0.0, 1) == "0.500"


def test_report_errors_are_one_line(tmp_path, capsys):
    from battery import one_line_error

    one_line_error(main, ["report", str(tmp_path / "missing")], capsys, "report: no such directory")
    one_line_error(main, ["report", str(tmp_path)], capsys, "neither a run (results.json) nor a comparison")


def test_forgetting_curves_start_where_each_experience_is_trained():
    from lifelong_moe.reporting.plots import forgetting_curves_figure

    R = np.array([[0.9, 0.0, 0.0], [0.7, 0.8, 0.0], [0.6, 0.7, 0.95]])
    fig = forgetting_curves_figure(R, [0.9, 0.75, 0.75], ["a", "b", "c"])
    lines = fig.axes[0].get_lines()
    for j in range(3):  # not drawn as 0 before it was trained
        np.testing.assert_array_equal(lines[j].get_xdata(), np.arange(j, 3))
        np.testing.assert_array_equal(lines[j].get_ydata(), R[j:, j])


def test_comparison_figures_take_any_number_of_methods_and_experiences():
    from lifelong_moe.reporting.plots import comparison_figure

    final = {m: np.random.default_rng(k).random((2, 5)) for k, m in enumerate(["a", "b", "c"])}
    for experiences in (None, ["e0", "e1", "e2", "e3", "e4"]):
        fig_a, fig_b = comparison_figure(final, final, experiences)
        for fig in (fig_a, fig_b):
            assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == (experiences or ["0", "1", "2", "3", "4"])


def _screenshot(page: Path, out: Path, height: int) -> Any:
    from PIL import Image

    profile = out.parent / f"{out.stem}-profile"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size=1280,{height}",
                    f"--screenshot={out}", page.resolve().as_uri()], capture_output=True, timeout=120, check=False)
    assert out.is_file(), "chromium wrote no screenshot"
    return Image.open(out).convert("RGB")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here (the content checks above run everywhere)")
@pytest.mark.parametrize("which", ["run", "two_seeds"])
def test_reports_render_in_headless_chromium(runs, tmp_path, which):
    from lifelong_moe.reporting.report import write_report

    image = _screenshot(write_report(runs[which], tmp_path / "page.html"), tmp_path / "shot.png", 2000)
    assert image.size == (1280, 2000)
    pixels = np.asarray(image)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    inked = (pixels < 200).any(2).mean()  # share of pixels that are not (near) white: text, tables, figures
    assert colours > 500 and 0.03 < inked < 0.9, (colours, inked)


def test_report_never_replaces_a_file_it_did_not_write(runs, tmp_path, capsys):
    from battery import one_line_error

    results = runs["run"] / "results.json"
    before = results.read_bytes()
    one_line_error(main, ["report", str(runs["run"]), "-o", str(results)], capsys, "report: --output: ")
    assert results.read_bytes() == before  # the run's results are intact, and report still reads them
    page = tmp_path / "page.html"
    assert main(["report", str(runs["run"]), "-o", str(page)]) == 0
    assert main(["report", str(runs["run"]), "-o", str(page)]) == 0  # its own page is replaced
    assert page.read_text().startswith("<!DOCTYPE html>")
