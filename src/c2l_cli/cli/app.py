"""The ``c2l`` Typer app: the command table, ``--version`` and the one top-level error handler.

Command modules import only Typer at import time; torch and the engine are imported inside the
command functions, so ``c2l --help`` stays instant.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Optional

import typer
from typer.core import TyperGroup

from .. import settings
from .._version import __version__
from ..errors import C2LError

#: Modules under ``c2l_cli.cli`` that each define ``register(app)``.
COMMAND_MODULES = ("sample", "edit", "direction", "score", "gendata", "train", "models")


#: Exceptions that are the framework's own control flow (exit, abort, usage errors): let them pass.
_PASSTHROUGH = (
    typer.Exit,
    typer.Abort,
    next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"),
)


class C2LGroup(TyperGroup):
    """A click group whose ``invoke`` is the single place where errors become exit codes."""

    def list_commands(self, ctx) -> list[str]:  # keep registration order
        return list(self.commands)

    def invoke(self, ctx):  # noqa: D401 - click API
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except _PASSTHROUGH:
            raise
        except C2LError as exc:
            _report(exc, exc.exit_code)
        except KeyboardInterrupt as exc:
            _report(exc, 130, "interrupted")
        except Exception as exc:  # a bug: still one line unless C2L_DEBUG=1
            _report(exc, 1, f"unexpected {type(exc).__name__}: {exc} (set C2L_DEBUG=1 for the traceback)")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Every warning raised while a command runs becomes one ``warning: …`` line on stderr."""
    from .output import warn

    text = " ".join(str(message).split())
    if settings.debug():
        text = f"{text} ({category.__name__}, {filename}:{lineno})"
    warn(text)


def _report(exc: BaseException, code: int, message: Optional[str] = None) -> None:
    if settings.debug():
        raise exc
    from rich.markup import escape

    from .output import stderr_console

    text = message if message is not None else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    stderr_console().print(f"[bold red]error:[/bold red] {escape(text)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"c2l {__version__}")
        raise typer.Exit(0)


app = typer.Typer(
    cls=C2LGroup,
    name="c2l",
    help="Text to high-resolution images with a pre-trained StyleGAN, a CLIP-conditioned diffusion prior and CLIP (clip2latent).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Text to high-resolution images with a pre-trained StyleGAN, a CLIP-conditioned diffusion prior and CLIP."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="c2l")
