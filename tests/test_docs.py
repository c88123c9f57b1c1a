"""The documentation: `mkdocs build --strict` passes (no broken link or anchor, every page in the nav), the
README's links into docs/ resolve to pages and headings of that site, the README keeps its two commands (the
ones .ci/run runs) in under 250 lines, and the config reference is generated from the schema, documents every
config key exactly once and is up to date."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from lifelong_moe import catalog

ROOT = Path(__file__).resolve().parents[1]
INSTALL = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && lifelong-moe run configs/default.yaml'
TEST = "python -m pytest -q"


def test_config_reference_is_generated_and_up_to_date():
    committed = (ROOT / "docs" / "config-reference.md").read_text()
    assert committed == catalog.config_reference(), "regenerate: python -m lifelong_moe.catalog docs/config-reference.md"


def test_every_config_key_is_documented_once():
    text = (ROOT / "docs" / "config-reference.md").read_text()
    keys_section = text.split("## Keys")[1].split("\n## ")[0]
    documented = re.findall(r"^\| `([^`]+)` \| `[^`]*` \| `[^`]*` \| (.*) \|$", keys_section, re.MULTILINE)
    names = [k for k, _ in documented]
    assert len(names) == len(set(names))
    expected = {p.name for p in catalog.config_keys()}
    assert set(names) == expected
    for required in ("train.epochs", "stream.experiences[].classes", "stream.sources.<name>.kind", "pretrained.<modality>.weights",
                     "trainer.cpu_threads", "stream.split.class_order", "modality_eval.missing_rates"):
        assert required in names
    assert all(len(help_) > 8 for _, help_ in documented), [k for k, h in documented if len(h) <= 8]
    # and every registered component's parameters, each under its own heading
    for kind in ("sources", "models", "strategies", "encoders"):
        for name in catalog.components(kind):
            assert f"### `{name}`" in text


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _page(site: Path, doc: str) -> Path:
    """The built HTML of docs/<doc>.md."""
    stem = doc.removesuffix(".md")
    return site / "index.html" if stem == "index" else site / stem / "index.html"


def test_mkdocs_builds_strictly(site):
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    for page in ("index.md", "define-a-stream.md", "your-data.md", "pretrained-encoders.md", "models.md", "run.md",
                 "compare.md", "read-results.md", "extend.md", "class-names.md", "predict.md", "list.md",
                 "config-reference.md", "results.md"):
        assert page in pages
    for page in pages:
        assert _page(site, page).is_file(), page
    assert not (ROOT / "docs" / "readme.md").exists(), "the README is no longer part of the site"


def test_readme_links_resolve_into_the_site(site):
    """mkdocs checks the pages' links; the README is outside the site, so its links are checked here: every
    relative link names an existing file, and an anchor names a heading of the page it points to."""
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert any(link.startswith("docs/") for link in relative)
    own = {slugify(h, "-") for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    for link in relative:
        target, _, anchor = link.partition("#")
        if not target:
            assert anchor in own, link
            continue
        assert (ROOT / target).exists(), link
        if anchor:
            assert target.startswith("docs/") and target.endswith(".md"), link
            html = _page(site, target.removeprefix("docs/")).read_text()
            assert f'id="{anchor}"' in html, link


def test_readme_is_short_and_keeps_its_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.DOTALL)
    assert blocks[:2] == [INSTALL, TEST]
    # CI installs as the README does (its own venv) and runs exactly the README's test command
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == TEST
    assert 'pip install -e ".[dev]"' in ci
