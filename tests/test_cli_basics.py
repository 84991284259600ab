"""The `c2l` executable: help, version, exit codes, one-line errors, no torch at startup."""

from __future__ import annotations

import os
import subprocess
import sys

import typer
from typer.testing import CliRunner

from c2l_cli import __version__
from c2l_cli.cli.app import app

runner = CliRunner()


def c2l(*args: str, env: dict | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter (as the console script does)."""
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "c2l_cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120)


def test_help_lists_every_command_with_a_description():
    group = typer.main.get_command(app)
    names = list(group.commands)
    assert "models" in names
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for name, cmd in group.commands.items():
        assert name in r.stdout
        assert (cmd.get_short_help_str(limit=200) or "").strip(), f"command {name} has no description"
    models = typer.main.get_command(app).commands["models"]
    assert set(models.commands) == {"list", "download", "verify", "path"}


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0
    assert r.stdout.strip() == f"c2l {__version__}"
    p = c2l("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"c2l {__version__}"


_PROBE = """
import sys
from c2l_cli.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("torch", "open_clip", "numpy", "requests") if m in sys.modules]
sys.stderr.write("HEAVY=" + ",".join(heavy) + "\\n")
"""


def _heavy(*args: str) -> list[str]:
    p = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120)
    line = [x for x in p.stderr.splitlines() if x.startswith("HEAVY=")][-1]
    return [m for m in line[len("HEAVY="):].split(",") if m]


def test_help_does_not_import_torch():
    for args in (["--help"], ["models", "--help"], ["models", "list"], ["models", "path"]):
        heavy = _heavy(*args)
        assert "torch" not in heavy and "open_clip" not in heavy, (args, heavy)
    assert "requests" not in _heavy("--help")


def test_usage_error_exits_2():
    p = c2l("--no-such-option")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    p = c2l("models", "download", "no-such-model")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip().splitlines()[0]]
    assert p.stderr.startswith("error: unknown model 'no-such-model'")


def test_runtime_error_is_one_line_exit_1(tmp_path):
    p = c2l("models", "download", "direction-age", env={"C2L_OFFLINE": "1", "C2L_CACHE_DIR": str(tmp_path)})
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: direction-age is not in the cache")
    assert "Traceback" not in p.stderr
    assert p.stdout == ""


def test_debug_shows_the_traceback(tmp_path):
    p = c2l("models", "download", "direction-age",
            env={"C2L_OFFLINE": "1", "C2L_DEBUG": "1", "C2L_CACHE_DIR": str(tmp_path)})
    assert p.returncode == 1
    assert "Traceback (most recent call last)" in p.stderr
    assert "OfflineError" in p.stderr
