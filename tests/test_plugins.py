"""Components from the user's own code reach `lifelong-moe run` without any edit of the package: a module
named in the config's `imports:` list, and an installed package's `lifelong_moe.plugins` entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import tiny_config, write_yaml
from lifelong_moe import config_from_dict
from lifelong_moe.errors import ConfigError

CLI = [sys.executable, "-m", "lifelong_moe.cli"]

PLUGIN = textwrap.dedent('''
    """A user's model: nearest class mean of the fused tokens (trained encoders, no head)."""
    from dataclasses import dataclass

    import torch
    from torch import nn

    from lifelong_moe import MODELS, ContinualModule


    @dataclass
    class CentroidParams:
        dim: int = 8


    class Centroid(ContinualModule):
        def __init__(self, params, **kw):
            super().__init__(embed_dim=params.dim, **kw)
            self.scores = nn.Linear(params.dim, self.n_classes)

        def logits(self, inputs, task_labels=None):
            return self.scores(self.fuse(inputs))


    @MODELS.register("{name}", params=CentroidParams)
    def centroid(params, **kw):
        """A user's centroid model, registered from outside the package."""
        return Centroid(params, **kw)
''')


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)


def test_a_module_named_in_imports_registers_a_model_that_run_uses(tmp_path: Path) -> None:
    package = tmp_path / "my_components"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(PLUGIN.format(name="centroid_from_imports"))
    cfg = tiny_config(tmp_path / "runs", model={"name": "centroid_from_imports", "params": {"dim": 12}},
                      train={"epochs": 1, "batch_size": 16, "lr": 0.01})
    cfg["imports"] = ["my_components.models"]
    cfg["modality_eval"] = {"subsets": False, "single_each_experience": False, "missing_rates": []}
    config = write_yaml(tmp_path / "exp.yaml", cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()  # the module is found beside the config, not only in the working directory

    proc = _cli(["run", str(config)], cwd=elsewhere)

    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(next((tmp_path / "runs").glob("tiny/*/results.json")).read_text())
    assert results["status"] == "complete" and results["model"] == "centroid_from_imports"
    assert results["parameters_per_experience"][-1]["total"] > 0


def test_an_import_that_fails_is_one_line_naming_the_key(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "runs")
    cfg["imports"] = ["ok_name", "no_such_module_anywhere"]
    (tmp_path / "ok_name.py").write_text("")
    proc = _cli(["validate", str(write_yaml(tmp_path / "exp.yaml", cfg))], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "imports[1]" in proc.stderr and "no_such_module_anywhere" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_an_import_that_exits_is_refused_naming_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(tmp_path / "runs")
    cfg["imports"] = ["exits_on_import"]
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^imports\[0\]: importing 'exits_on_import' called sys.exit\(3\)"):
        config_from_dict(cfg)


@pytest.mark.parametrize("bad", ["../up", "a b", "", "os.path.."])
def test_an_import_that_is_not_a_module_name_is_refused(tmp_path: Path, bad: str) -> None:
    cfg = tiny_config(tmp_path / "runs")
    cfg["imports"] = ["json", bad]
    with pytest.raises(ConfigError, match=r"^imports\[1\]: .* is not a module name"):
        config_from_dict(cfg)


def test_an_installed_entry_point_registers_a_model_for_list_and_run(tmp_path: Path) -> None:
    """A package installed with `[project.entry-points."lifelong_moe.plugins"]`: its distribution metadata
    on the path is all `importlib.metadata` reads, so the test writes that metadata by hand."""
    site = tmp_path / "site"
    (site / "user_plugin").mkdir(parents=True)
    (site / "user_plugin" / "__init__.py").write_text(PLUGIN.format(name="centroid_from_entry_point"))
    meta = site / "user_plugin-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: user-plugin\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[lifelong_moe.plugins]\ncentroid = user_plugin\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    listed = _cli(["list"], cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "centroid_from_entry_point" in listed.stdout and "registered from outside the package" in listed.stdout

    cfg = tiny_config(tmp_path / "runs", model={"name": "centroid_from_entry_point"}, train={"epochs": 1, "batch_size": 16, "lr": 0.01})
    cfg["modality_eval"] = {"subsets": False, "single_each_experience": False, "missing_rates": []}
    proc = _cli(["run", str(write_yaml(tmp_path / "exp.yaml", cfg))], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(next((tmp_path / "runs").glob("tiny/*/results.json")).read_text())
    assert results["status"] == "complete" and results["model"] == "centroid_from_entry_point"


def test_a_broken_entry_point_is_one_line_naming_the_plugin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "broken_plugin").mkdir(parents=True)
    (site / "broken_plugin" / "__init__.py").write_text("raise RuntimeError('half-installed')\n")
    meta = site / "broken_plugin-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[lifelong_moe.plugins]\nbroken = broken_plugin\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = _cli(["validate", str(write_yaml(tmp_path / "exp.yaml", tiny_config(tmp_path / "runs")))], cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "plugin 'broken'" in proc.stderr and "half-installed" in proc.stderr
    assert proc.stderr.count("\n") == 1
