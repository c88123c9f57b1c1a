"""`lifelong-moe list KIND`: every registered component's parameters, with type, default and help read from its
params dataclass (the comment on each field), and registries that name their built-ins before loading them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from battery import one_line_error
from lifelong_moe import catalog
from lifelong_moe.cli import main
from lifelong_moe.config.schema import TrainConfig
from lifelong_moe.registry import Registry


@pytest.mark.parametrize("kind", [k for k, spec in catalog.KINDS.items() if spec.has_params])
def test_every_registered_parameter_has_a_type_a_default_and_help(kind):
    names = catalog.components(kind)
    assert names
    for name in names:
        schema = catalog.registry(kind).params_schema(name)
        params = catalog.params_of(kind, name)
        assert bool(params) == (schema is not None)
        for p in params:
            assert p.type and p.default, (kind, name, p)
            assert len(p.help) > 8, f"{kind} {name}: parameter {p.name} has no help (a comment on its line)"


@dataclass
class _Example:
    """An example."""

    plain: int = 3  # one line of help
    spread: float = 0.5  # help that goes on
    # on the next line
    # and the one after
    nothing: str = "x"
    listed: list[int] = field(default_factory=lambda: [1, 2])  # type: ignore[assignment] (a checker remark is not help)
    required: str = "???"  # must be given

    # a comment after a blank line belongs to no field
    optional: str | None = None  # or null


def test_help_comes_from_the_comments_on_and_below_each_field():
    docs = catalog.field_docs(_Example)
    assert docs == {"plain": "one line of help", "spread": "help that goes on on the next line and the one after",
                    "nothing": "", "listed": "", "required": "must be given", "optional": "or null"}
    rows = {p.name: p for p in catalog.parameters(_Example)}
    assert (rows["listed"].type, rows["listed"].default) == ("list[int]", "[1, 2]")
    assert (rows["required"].default, rows["optional"].type, rows["optional"].default) == ("(required)", "str | None", "null")
    assert catalog.field_docs(TrainConfig)["modality_dropout"].endswith("(a sample keeps at least one)")


def test_list_kind_prints_each_components_parameters(capsys):
    assert main(["list", "strategies", "ewc"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "strategies (strategy.name):"
    assert out[1].split()[0] == "ewc"
    assert out[2].split()[:3] == ["ewc_lambda", "float", "100.0"] and "penalty" in out[2]
    assert main(["list", "model"]) == 0  # singular works
    out = capsys.readouterr().out
    assert "moe " in out and "experts_per_growth" in out and "experts added to every layer at each growth step" in out
    assert main(["list", "sources", "csv"]) == 0
    out = capsys.readouterr().out
    assert "split_column" in out and "tokenizer.max_length" in out  # nested dataclasses field by field
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for title in ("data sources", "models", "strategies", "pretrained encoders", "growth policies", "communication modes"):
        assert title in out


@pytest.mark.parametrize("argv, expected", [
    (["list", "modelz"], "list: unknown kind 'modelz' (did you mean 'models'?)"),
    (["list", "models", "mo"], "unknown model 'mo' (did you mean 'moe'?)"),
])
def test_list_errors_are_one_line(capsys, argv, expected):
    one_line_error(main, argv, capsys, expected)


def test_declared_builtin_names_must_match_what_the_builtins_register():
    from lifelong_moe.errors import ConfigError

    wrong = Registry("model", builtins=("lifelong_moe.models",), names=("moe",))
    assert "multimodal_mlp" not in wrong._names
    wrong.check_name("moe")  # known without loading anything
    with pytest.raises(ConfigError, match=r"unknown model 'mo' \(did you mean 'moe'\?\)"):
        wrong.check_name("mo")
    with pytest.raises(RuntimeError, match="the built-in models are"):
        wrong.get("moe")  # loading finds another built-in than declared
    from lifelong_moe.registry import MODELS, STRATEGIES

    for registry in (MODELS, STRATEGIES):  # the real declarations agree with the built-ins
        registry._load()
        assert set(registry._names) <= set(registry)
