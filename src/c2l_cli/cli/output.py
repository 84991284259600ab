"""The one output sink of the CLI.

Results go to stdout (plain text, a Rich table, or ``--json``); progress, warnings and errors go
to stderr through one Rich console, so ``c2l … --json > out.json`` stays machine-readable.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from ..fsutil import json_default

#: Progress bars, warnings and errors (stderr).
err = Console(stderr=True, highlight=False)


def out_console() -> Console:
    """A console on the *current* stdout (Typer's CliRunner swaps sys.stdout per invocation)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    """A console on the *current* stderr (see :func:`out_console`)."""
    return Console(file=sys.stderr, highlight=False)


def warn(message: str) -> None:
    """One warning line on stderr."""
    from rich.markup import escape

    stderr_console().print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    """One progress/info line on stderr."""
    stderr_console().print(message, markup=False, highlight=False)


def print_json(obj: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=json_default) + "\n")
    sys.stdout.flush()


def print_line(text: str) -> None:
    """One plain line on stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
