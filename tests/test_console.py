"""What a researcher sees on the console: no third-party warnings, one line per experience (per seed inside
`compare`), progress lines on long data work, and answers to `--help` and config errors before torch,
Lightning or Avalanche are imported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import tiny_config, write_yaml
from scenarios.progress import Ticker, reporting

WARNING = re.compile(r"Warning\b|^\s*warnings\.warn\(")  # "UserWarning: ...", "DeprecationWarning: ..." and the source line


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)  # the default filters, as a user's shell has them
    return env


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifelong_moe.cli", *args], capture_output=True, text=True, cwd=cwd, env=_env())


def _default_style(tmp_path: Path) -> Path:
    """The default config's model and strategy (moe, naive) on the tiny stream."""
    cfg = tiny_config(tmp_path / "runs", model={"name": "moe"})
    cfg["train"]["epochs"] = 1
    cfg["trainer"]["cpu_threads"] = 1
    return write_yaml(tmp_path / "tiny.yaml", cfg)


@pytest.mark.slow
def test_a_default_run_prints_one_line_per_experience_and_no_warning(tmp_path):
    proc = _cli("run", str(_default_style(tmp_path)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    assert not [ln for ln in lines if WARNING.search(ln)], lines
    assert [ln.split(" |")[0] for ln in lines] == ["[lifelong-moe] experience 1/2 (exp0)", "[lifelong-moe] experience 2/2 (exp1)",
                                                   "[lifelong-moe] done in " + lines[-1].split("done in ")[1].split(" |")[0]]


@pytest.mark.slow
def test_a_two_strategy_compare_prints_a_line_per_experience_and_seed_and_no_warning(tmp_path):
    # replay is the one that used to warn: Avalanche's buffer calls its own deprecated `update` each experience
    proc = _cli("compare", str(_default_style(tmp_path)), "--strategies", "moe,replay", "--seeds", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    assert not [ln for ln in lines if WARNING.search(ln)], lines
    for k, (name, seed) in enumerate([("moe", 0), ("moe", 1), ("replay", 0), ("replay", 1)]):
        where = f"[compare] {name} seed {seed} ({k + 1}/4)"
        assert sum(ln.startswith(f"{where} | experience ") for ln in lines) == 2, lines
        assert sum(ln.startswith(f"{where}: ACC ") for ln in lines) == 1
    assert lines[-1].startswith("[compare] done | ")


_SOLVERS = Path(__import__("qpsolvers").__file__).parent / "solvers"
_BLOCK = f"""
import sys
from pathlib import Path
for f in Path({str(_SOLVERS)!r}).glob("*_.py"):  # as on a machine with no QP solver installed
    sys.modules["qpsolvers.solvers." + f.stem] = None
"""


@pytest.mark.slow
def test_no_qp_solver_warning_reaches_the_console(tmp_path):
    # the simulation works: qpsolvers alone warns
    alone = subprocess.run([sys.executable, "-c", _BLOCK + "import qpsolvers"], capture_output=True, text=True, env=_env())
    assert "no QP solver found" in alone.stderr
    # the command does not pass it on (Avalanche imports qpsolvers for GEM)
    cfg = _default_style(tmp_path)
    code = _BLOCK + f"from lifelong_moe.cli import main\nsys.exit(main(['validate', {str(cfg)!r}]))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "avalanche" in proc.stdout or "valid (" in proc.stdout
    assert not [ln for ln in (proc.stdout + proc.stderr).splitlines() if WARNING.search(ln)]


def test_the_qp_solver_filter_is_narrow():
    import importlib
    import warnings

    import scenarios

    importlib.reload(scenarios)  # installs the filter again (pytest drops filters set while it collected the tests)

    def emitted(module: str, message: str) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", append=True)  # after the installed filters: whatever they let pass shows
            warnings.warn_explicit(message, UserWarning, f"{module}.py", 1, module=module, registry={})
        return [str(w.message) for w in caught]

    assert emitted("qpsolvers.solvers", "no QP solver found on your system") == []
    assert emitted("mymodule", "no QP solver found on your system") == ["no QP solver found on your system"]
    assert emitted("qpsolvers.solvers", "something else") == ["something else"]
    assert any(f[0] == "ignore" and f[1] is not None and f[1].pattern.startswith("no QP solver found")
               and f[3] is not None and f[3].pattern.startswith("qpsolvers") for f in warnings.filters)


def test_replay_leaves_the_deprecation_filters_alone(tiny):
    """Avalanche's deprecated buffer `update` would set DeprecationWarning to "once" for the whole process."""
    import warnings

    from lifelong_moe import config_from_dict, run

    before = [f for f in warnings.filters if f[2] is DeprecationWarning]
    run(config_from_dict({**tiny, "strategy": {"name": "replay", "params": {"mem_size": 20}},
                          "train": {"epochs": 1, "batch_size": 16}}), progress=lambda _: None)
    assert [f for f in warnings.filters if f[2] is DeprecationWarning] == before


def test_ticker_tells_at_most_every_interval_and_stays_quiet_for_short_work():
    told: list[str] = []
    with reporting(told.append):
        ticker = Ticker("decoding", 4, every=0.0, quiet=0.0)
        for _ in range(4):
            ticker.add()
        quiet = Ticker("fast work", 3, every=60.0, quiet=60.0)
        for _ in range(3):
            quiet.add()
    assert [t.split(",")[0] for t in told] == [f"[lifelong-moe] decoding: {k}/4 ({25 * k}%)" for k in range(1, 5)]
    Ticker("nobody listens", 1, every=0.0, quiet=0.0).add()  # no listener: nothing printed, no error


@pytest.mark.slow
def test_help_and_config_errors_answer_before_heavy_imports(tmp_path):
    """`--help`, a misspelt key, an unknown model or strategy name and a source's bad param are answered
    without importing torch, Lightning or Avalanche (measured start-up: see the issue's closing note)."""
    cfg = _default_style(tmp_path)
    probe = textwrap.dedent("""
        import sys
        from lifelong_moe.cli import main
        code = main(sys.argv[1:])
        heavy = sorted(m for m in ("torch", "lightning", "avalanche") if m in sys.modules)
        print("HEAVY", code, heavy, file=sys.stderr)
    """)
    for args, message in [(["--help"], None), (["run", str(cfg), "train.epochz=1"], "train.epochz"),
                          (["run", str(cfg), "model.name=mo"], "did you mean 'moe'"),
                          (["run", str(cfg), "strategy.name=eewc"], "did you mean 'ewc'"),
                          (["validate", str(cfg), "stream.sources.syn.params.n_clases=3"], "n_clases"),
                          (["validate", str(cfg), "stream.sources.syn.kind=synthetc"], "did you mean 'synthetic'")]:
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=_env())
        heavy = proc.stderr.strip().splitlines()[-1]
        assert heavy.startswith("HEAVY") and heavy.endswith("[]"), (args, proc.stderr)
        if message:
            assert message in proc.stderr and " 2 " in heavy
