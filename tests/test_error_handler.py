"""The one top-level error handler: errors and warnings become single stderr lines, markup-safe."""

from __future__ import annotations

import warnings

import pytest
import typer
from typer.testing import CliRunner

from c2l_cli.cli.app import C2LGroup
from c2l_cli.errors import C2LError, C2LWarning, UsageError


def _app() -> typer.Typer:
    app = typer.Typer(cls=C2LGroup, add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def boom(kind: str = "runtime") -> None:
        warnings.warn("shape [num_ws, w_dim] looks odd", C2LWarning)
        if kind == "runtime":
            raise C2LError("bad shape [num_ws, w_dim] vs [1, 512]\nsecond line")
        if kind == "usage":
            raise UsageError("--steps must be positive")
        if kind == "bug":
            raise ValueError("oops [x]")
        if kind == "interrupt":
            raise KeyboardInterrupt

    @app.command()
    def ok() -> None:
        typer.echo("fine")

    return app


@pytest.mark.parametrize(
    "kind,code,text",
    [
        ("runtime", 1, "error: bad shape [num_ws, w_dim] vs [1, 512] second line"),
        ("usage", 2, "error: --steps must be positive"),
        ("bug", 1, "error: unexpected ValueError: oops [x] (set C2L_DEBUG=1 for the traceback)"),
        ("interrupt", 130, "error: interrupted"),
    ],
)
def test_errors_are_one_line_with_their_exit_code(kind, code, text):
    result = CliRunner().invoke(_app(), ["boom", "--kind", kind])
    assert result.exit_code == code
    lines = result.output.strip().splitlines()
    assert lines == ["warning: shape [num_ws, w_dim] looks odd", text]
    assert "Traceback" not in result.output


def test_debug_shows_the_exception(monkeypatch):
    monkeypatch.setenv("C2L_DEBUG", "1")
    result = CliRunner().invoke(_app(), ["boom", "--kind", "runtime"])
    assert result.exit_code != 0
    assert isinstance(result.exception, C2LError)


def test_warning_filter_is_restored_after_a_command():
    before = warnings.showwarning
    CliRunner().invoke(_app(), ["boom", "--kind", "usage"])
    assert warnings.showwarning is before
