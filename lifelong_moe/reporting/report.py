"""`lifelong-moe report DIR`: one self-contained HTML page for a run or a comparison, read at a glance.

A run's page holds its metrics, experiences and classes (by name), the accuracy-matrix heatmap, the
forgetting curves, accuracy per class and the confusion matrix of the last evaluation, the routing figures
(models that route), the contributions of the model's parts (where results.json has them) and the config.
A comparison's page holds the comparison table with its spreads, the comparison figures and each method's
mean accuracy matrix. Figures are drawn from results.json (not read from the PNG files, which `output.plots`
may have turned off) and embedded as PNG data URIs; styles are inline; the page loads nothing from anywhere,
so it can be mailed or opened offline."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lifelong_moe.errors import ConfigError
from lifelong_moe.reporting.files import atomic_write_text, check_overwrite
from lifelong_moe.reporting.plots import (
    accuracy_matrix_figure,
    class_accuracy_figure,
    comparison_figure,
    confusion_matrix_figure,
    experience_labels,
    figure_png,
    forgetting_curves_figure,
    modality_robustness_figure,
    routing_mass_figure,
)
from lifelong_moe.reporting.results_file import read_results

REPORT = "report.html"
PAGE_START = "<!DOCTYPE html>"  # how every page begins: an existing file that does not is never replaced
METRICS = (("acc", "ACC"), ("avg_incremental_acc", "avg incremental acc"), ("bwt", "BWT"), ("fwt", "FWT"),
           ("forgetting", "forgetting"))

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1d2329; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #d5dae0; padding-bottom: .2rem; }
.sub { color: #5b6570; margin-top: 0; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #d5dae0; padding: .25rem .6rem; text-align: right; }
th { background: #f1f3f5; } td.name, th.name { text-align: left; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #e5e8eb; }
figcaption { font-size: .85rem; color: #5b6570; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .8rem; }
.warn { background: #fff4e5; border: 1px solid #f0b45a; padding: .5rem .8rem; }
nav a { margin-right: .8rem; }
"""


def write_report(path: str | Path, output: str | Path | None = None) -> Path:
    """The report of the run or comparison in `path`, written to `output` (default `path/report.html`)."""
    where = Path(path)
    if not where.is_dir():
        raise ConfigError(f"report: no such directory: {path}")
    out = Path(output) if output is not None else where / REPORT
    check_overwrite(out, "report: --output" if output is not None else "report", PAGE_START.encode())  # before any work
    if (where / "results.json").is_file():
        page = run_page(where)
    elif (where / "comparison.csv").is_file() or any(where.glob("*/*/results.json")):
        page = comparison_page(where)
    else:
        raise ConfigError(f"report: {path} is neither a run (results.json) nor a comparison (comparison.csv)")
    atomic_write_text(out, page)
    return out


# ---- a run ----------------------------------------------------------------------------------------
def run_page(run: Path) -> str:
    results = read_results(run / "results.json", "report")  # checked once, for everything the page reads
    config = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
    R = _matrix(results["accuracy_matrix"])
    names = [e["name"] for e in results["experiences"]]
    class_names = results.get("class_names") or [str(c) for c in range(1 + max(c for e in results["experiences"] for c in e["classes"]))]
    labels = experience_labels(names, [[class_names[c] for c in e["classes"]] for e in results["experiences"]])
    title = f"{results['experiment']}: {results['model']} with {results['strategy']}, seed {results['seed']}"
    sections = [("summary", "Summary", _summary(results)), ("experiences", "Experiences and classes", _experiences(results, class_names))]
    sections.append(("accuracy", "Accuracy matrix and forgetting curves", _figures([
        (accuracy_matrix_figure(R, labels), "R[i][j]: accuracy on test experience j after training experience i"),
        (forgetting_curves_figure(R, results["metrics"].get("seen_acc", []), labels),
         "accuracy on each experience from the step that trained it on; dashed: on everything seen"),
    ])))
    per_class = [r for r in results.get("per_class", []) if r]
    if per_class:
        sections.append(("classes", "Accuracy per class", _per_class(per_class, class_names, names)))
    report = (results.get("evaluations") or [{}])[-1] if results.get("evaluations") else {}
    if "routing_mass" in report:
        sections.append(("routing", "Routing", _routing(report, labels)))
    if results.get("contributions"):
        sections.append(("contributions", "Contributions of the model's parts", _contributions(results["contributions"], names)))
    if results.get("modality_evaluation"):
        sections.append(("modalities", "Missing modalities", _figures([
            (modality_robustness_figure(results["modality_evaluation"]), "accuracy with each subset of modalities, and against the missing rate")])))
    sections.append(("config", "Config", f"<pre>{html.escape(config)}</pre>"))
    status = results.get("status")
    banner = "" if status == "complete" else f'<p class="warn">status: {html.escape(str(status))} {html.escape(str(results.get("error", "")))}</p>'
    sub = f"{results['scenario']} · {len(names)} experiences · {run}"
    return _page(title, sub, banner, sections)


def _summary(results: dict[str, Any]) -> str:
    m = results["metrics"]
    params = results.get("parameters_per_experience") or [{}]
    rows = [[label, _num(m.get(key))] for key, label in METRICS]
    rows += [["parameters after the last experience", f"{params[-1].get('total', 0):,}"],
             ["trainable", f"{params[-1].get('trainable', 0):,}"],
             ["memory of past data", str(results.get("memory", ""))],
             ["wall time", f"{results.get('wall_time_s', 0):.1f} s"]]
    return _table(["metric", "value"], rows)


def _experiences(results: dict[str, Any], class_names: Sequence[str]) -> str:
    rows = [[str(k), e["name"], e["source"], ", ".join(class_names[c] for c in e["classes"]), "+".join(e["modalities"]),
             str(e["n_train"]), str(e["n_test"])] for k, e in enumerate(results["experiences"])]
    out = _table(["#", "name", "source", "classes", "modalities", "train", "test"], rows, text_columns=(1, 2, 3, 4))
    used = sorted({c for e in results["experiences"] for c in e["classes"]})
    if any(class_names[c] != str(c) for c in used):
        out += "<p>Labels of the named classes:</p>" + _table(["label", "class"], [[str(c), class_names[c]] for c in used], text_columns=(1,))
    return out


def _per_class(per_class: list[dict[str, Any]], class_names: Sequence[str], names: Sequence[str]) -> str:
    last = per_class[-1]
    rows = [[class_names[c], str(n), _num(a)] for c, (n, a) in enumerate(zip(last["support"], last["accuracy"])) if n]
    figures = _figures([
        (confusion_matrix_figure(np.asarray(last["confusion_matrix"]), class_names, "confusion matrix, last evaluation"),
         "rows: true class; columns: predicted class; colour: share of the true class"),
        (class_accuracy_figure([r["accuracy"] for r in per_class], class_names, names[: len(per_class)]),
         "accuracy of each class after each experience"),
    ])
    return figures + _table(["class", "test samples", "accuracy (last evaluation)"], rows, text_columns=(0,))


def _routing(report: dict[str, Any], labels: Sequence[str]) -> str:
    out = _figures([(routing_mass_figure(report, labels), "gate mass of each test experience (left) and modality (right) over the experts")])
    if "routing_accuracy" in report:
        out += _table(["test experience", "routing accuracy"],
                      [[labels[j], _num(a)] for j, a in enumerate(report["routing_accuracy"])], text_columns=(0,))
    return out


def _contributions(parts: dict[str, Any], names: Sequence[str]) -> str:
    """Every part present, with its ACC, BWT and final accuracy on each experience (the last row of its R)."""
    head = ["part", "ACC", "BWT", *[f"final on {n}" for n in names]]
    rows = []
    for part, record in parts.items():
        R = _matrix(record.get("accuracy_matrix") or [[]])
        last = list(R[-1]) if R.size else []
        rows.append([part, _num(record.get("acc")), _num(record.get("bwt")), *[_num(v) for v in last],
                     *[""] * (len(names) - len(last))])
    return _table(head, rows, text_columns=(0,))


# ---- a comparison ----------------------------------------------------------------------------------
def comparison_page(out_dir: Path) -> str:
    from lifelong_moe.compare import comparison_row, completed_runs, display_table, spread_note, summary_table

    runs = completed_runs(out_dir)
    rows = {n: [comparison_row(r, r["metrics"]) for r in rs] for n, rs in runs.items()}
    header, cells = display_table(summary_table(rows), "method", "wall time (s)")
    first = next(iter(runs.values()))[0]
    names = [e["name"] for e in first["experiences"]]
    class_names = first.get("class_names") or []
    labels = experience_labels(names, [[class_names[c] for c in e["classes"]] for e in first["experiences"]]) if class_names else names
    final = {n: np.array([r["final_per_experience"] for r in rs]) for n, rs in rows.items()}
    seen = {n: np.array([r["seen_acc"] for r in rs]) for n, rs in rows.items()}
    fig_final, fig_seen = comparison_figure(final, seen, labels)
    sections = [
        ("table", "Comparison", _table(header, cells, text_columns=(0, 1, 9)) + f"<p>{html.escape(spread_note(rows))}</p>"),
        ("figures", "Accuracy", _figures([(fig_final, "final accuracy on each experience (bars: mean, whiskers: std over seeds)"),
                                          (fig_seen, "accuracy on everything seen after each experience (band: std)")])),
        ("matrices", "Accuracy matrix of each method (mean over seeds)", _figures([
            (accuracy_matrix_figure(np.nanmean([_matrix(r["accuracy_matrix"]) for r in rs], axis=0), labels, f"{n}: accuracy R[i][j]"),
             f"{n} ({len(rs)} seed(s))")
            for n, rs in runs.items()])),
    ]
    parts = {n: rs for n, rs in runs.items() if any(r.get("contributions") for r in rs)}
    if parts:
        sections.append(("contributions", "Contributions of the model's parts (mean over seeds)", _contribution_means(parts)))
    sections.append(("experiences", "Experiences and classes", _experiences(first, class_names or [str(c) for c in range(1 + max(c for e in first["experiences"] for c in e["classes"]))])))
    config = out_dir / next(iter(runs)) / f"seed{first['seed']}" / "config.yaml"
    sections.append(("config", f"Config (of {next(iter(runs))}, seed {first['seed']}; the others differ in model and strategy)",
                     f"<pre>{html.escape(config.read_text())}</pre>" if config.is_file() else "<p>(no config.yaml)</p>"))
    title = f"{out_dir.parent.name}: {len(runs)} methods compared"
    sub = f"{first['scenario']} · {len(names)} experiences · {out_dir}"
    return _page(title, sub, "", sections)


def _contribution_means(parts: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for method, rs in parts.items():
        names = sorted({p for r in rs for p in (r.get("contributions") or {})})
        for part in names:
            records = [r["contributions"][part] for r in rs if part in (r.get("contributions") or {})]
            acc = [x["acc"] for x in records if x.get("acc") is not None]
            bwt = [x["bwt"] for x in records if x.get("bwt") is not None]
            rows.append([method, part, _num(float(np.mean(acc)) if acc else None), _num(float(np.mean(bwt)) if bwt else None), str(len(records))])
    return _table(["method", "part", "ACC", "BWT", "seeds"], rows, text_columns=(0, 1))


# ---- HTML -----------------------------------------------------------------------------------------
def _page(title: str, sub: str, banner: str, sections: list[tuple[str, str, str]]) -> str:
    nav = " ".join(f'<a href="#{key}">{html.escape(head)}</a>' for key, head, _ in sections)
    body = "\n".join(f'<section id="{key}"><h2>{html.escape(head)}</h2>\n{content}</section>' for key, head, content in sections)
    return (f'{PAGE_START}\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1><p class=\"sub\">{html.escape(sub)}</p>"
            f"{banner}<nav>{nav}</nav>\n{body}\n<p class=\"sub\">Written by <code>lifelong-moe report</code>; "
            "self-contained: figures are embedded, nothing is loaded from elsewhere.</p></body></html>\n")


def _figures(figures: list[tuple[Any, str]]) -> str:
    out = []
    for fig, caption in figures:
        data = base64.b64encode(figure_png(fig)).decode("ascii")
        out.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "\n".join(out)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: Sequence[int] = (0,)) -> str:
    def cell(tag: str, k: int, value: str) -> str:
        cls = ' class="name"' if k in text_columns else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", k, h) for k, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", k, v) for k, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3f}"


def _matrix(rows: Any) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
