"""Settings are one table: every `lmdock serve` flag is a field and every field a flag, with the
variable and the name both derived from the field's name; flags and variables reach their field, and
`lmdock serve` with no flags is `Settings()`."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import typer.core
import typer.main

from lmdock.cli.main import app
from lmdock.core.config import RequestLimits, Settings, options, settings_from
from lmdock.core.errors import InvalidRequest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def serve():
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return group.commands["serve"]


def _parse(command, args: list[str]) -> Settings:
    return settings_from(command.make_context("serve", args).params)


def _field_names() -> set[str]:
    names = {f.name for f in dataclasses.fields(Settings) if f.name != "limits"}
    return names | {f.name for f in dataclasses.fields(RequestLimits)}


def _sample(opt) -> tuple[list[str], object]:
    """A command-line value unlike the default, and what the field should then hold."""
    base = opt.type.__args__[0] if opt.type.__class__.__name__ == "UnionType" else opt.type
    if opt.is_list:
        return ["x1", "x2"], ["x1", "x2"]
    if base is bool:
        return [], not opt.default
    if base is int:
        return ["7"], 7
    if base is float:
        return ["2.5"], 2.5
    if base is Path:
        return ["/tmp/somewhere"], Path("/tmp/somewhere")
    choices = {"cache_type_k": "q8_0", "cache_type_v": "q4_0", "flash_attn": "on", "spec_type": "ngram"}
    if opt.field in choices:
        return [choices[opt.field]], choices[opt.field]
    return [
        "9.9.9.9" if opt.field == "host" else "some-value"
    ], "9.9.9.9" if opt.field == "host" else "some-value"


def test_every_flag_is_a_field_and_every_field_a_flag(serve):
    flags = {name for p in serve.params for name in p.opts}
    table = {o.flag.split("/")[0] for o in options()}
    assert flags == table
    assert {o.field for o in options()} == _field_names()
    assert len(options()) == len(_field_names())


def test_flag_and_variable_follow_the_field_name():
    for opt in options():
        if opt.field == "repack":
            assert opt.flag == "--repack/--no-repack"
            continue
        stem = opt.field.removesuffix("s") if opt.is_list else opt.field  # a repeatable flag names one item
        assert opt.flag == "--" + stem.replace("_", "-"), opt.field
        assert opt.env == "LMDOCK_" + stem.upper(), opt.field
        assert opt.help.strip(), opt.field


def test_no_flags_is_the_default_settings(serve):
    assert _parse(serve, []) == Settings()


@pytest.mark.parametrize("opt", options(), ids=lambda o: o.field)
def test_each_flag_reaches_its_field(serve, opt):
    values, want = _sample(opt)
    if opt.is_list:
        args = [a for v in values for a in (opt.flag, v)]
    elif values:
        args = [opt.flag, *values]
    else:  # a boolean flag: its on or off form
        on, _, off = opt.flag.partition("/")
        args = [on if want else off or "--no-" + on.removeprefix("--")]
    settings = _parse(serve, args)
    holder = settings.limits if opt.group else settings
    assert getattr(holder, opt.field) == want


@pytest.mark.parametrize("opt", options(), ids=lambda o: o.field)
def test_each_variable_reaches_its_field(serve, opt, monkeypatch):
    values, want = _sample(opt)
    raw = ("1" if want else "0") if not values else ",".join(values) if opt.commas else values[0]
    if opt.is_list and not opt.commas:
        want = want[:1]
    monkeypatch.setenv(opt.env, raw)
    settings = _parse(serve, [])
    holder = settings.limits if opt.group else settings
    assert getattr(holder, opt.field) == want


def test_a_flag_wins_over_its_variable(serve, monkeypatch):
    monkeypatch.setenv("LMDOCK_REPACK", "off")
    monkeypatch.setenv("LMDOCK_PORT", "4321")
    assert _parse(serve, ["--repack", "--port", "99"]).repack is True
    assert _parse(serve, ["--port", "99"]).port == 99
    assert _parse(serve, []).repack is False


def test_keys_may_be_comma_separated_but_upstreams_stay_whole(serve):
    settings = _parse(serve, ["--api-key", "a,b", "--api-key", "c", "--upstream", "m=http://x:1,http://y:2"])
    assert settings.api_keys == ["a", "b", "c"]
    assert settings.upstreams == ["m=http://x:1,http://y:2"]


def test_the_readme_flag_table_is_the_settings_table():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(--[a-z-]+)`", readme, re.M))
    assert documented == {o.flag.split("/")[0] for o in options()}


def test_lmdock_variables_are_read_only_in_config():
    """Every LMDOCK_* read lives in lmdock.core.config (string literals elsewhere are docs or tests)."""
    offenders = []
    for path in (ROOT / "src" / "lmdock").rglob("*.py"):
        if str(path.relative_to(ROOT)) in {"src/lmdock/core/config.py"}:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("LMDOCK_")
                and id(node) not in docstrings
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert offenders == []


@pytest.mark.parametrize(
    ("args", "field"),
    [(["--spec-type", "ngram-map-k"], "spec_type"), (["--spec-draft-max", "-1"], "spec_draft_max")],
)
def test_a_bad_speculation_flag_is_refused_naming_it(serve, args, field):
    with pytest.raises(InvalidRequest) as err:
        _parse(serve, args)
    assert err.value.param == field and field in err.value.message
