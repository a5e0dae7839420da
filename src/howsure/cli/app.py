"""The typer application every command module registers on.

Command modules stay thin: parse, call the library, print. Library errors (`HowsureError`)
become one red line on stderr and exit code 2; nothing prints a traceback at a user.
"""

from __future__ import annotations

import functools

import typer
from rich.console import Console
from rich.markup import escape

from howsure.errors import HowsureError

app = typer.Typer(
    name="howsure",
    help="Turn a language model into a classifier whose confidence means what it says.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> "typer.Exit":
    """Print one clear error line and return the Exit to raise."""
    # Messages name the user's values (a user called "[/bad]", a path): shown as typed, never as markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def command(name: str | None = None, *, group: typer.Typer | None = None, **kwargs):
    """Register a command whose library errors become one clear line and exit code 2.

    Use it instead of ``@app.command()`` so every command handles `HowsureError` the same way,
    also under typer's test runner (which bypasses `main`).
    """

    def decorate(func):
        @functools.wraps(func)
        def guarded(*args, **kw):
            try:
                return func(*args, **kw)
            except HowsureError as exc:
                raise fail(str(exc)) from None
            except OSError as exc:
                # A path the user named that cannot be written or read (a folder where a file
                # goes, a missing folder, no permission): one line naming it, not a traceback.
                if exc.filename is None:
                    raise
                raise fail(f"{exc.strerror or exc}: {exc.filename!r}") from None

        (group or app).command(name, **kwargs)(guarded)
        return func

    return decorate
