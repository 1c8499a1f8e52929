"""The ``kawa`` command line. Command modules import heavy SDKs only inside their commands.

Errors reach the user as one line on stderr: a usage error (unknown command, missing argument, mistyped
option) names the ``--help`` to try and exits 2; a :class:`~kawa.errors.KawaError` says what was wrong and
what to do and exits 1. Neither prints a traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from kawa.cli.app import app


def _register() -> None:
    # Each module adds its commands to ``app`` on import; they are light (typer only).
    from kawa.cli import log_cmds, platform_cmds  # noqa: F401

    optional_modules = (
        "store_cmds", "function_cmds", "model_cmds", "route_cmds", "demo_cmds", "portal_cmds", "experiment_cmds",
        "loop_cmds", "monitor_cmds", "audit_cmds", "project_cmds",
    )
    for optional in optional_modules:
        try:
            __import__(f"kawa.cli.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"kawa.cli.{optional}":
                raise


def usage_line(exc: Exception) -> str:
    """One line for a usage error: what was wrong and which ``--help`` to try."""
    ctx = getattr(exc, "ctx", None)
    path = str(getattr(ctx, "command_path", "") or "kawa")
    format_message = getattr(exc, "format_message", None)
    message = str(format_message() if callable(format_message) else exc).strip().replace("\n", " ")
    message = message[:1].lower() + message[1:]
    if message and message[-1] not in ".)?":
        message += "."
    return f"{path}: {message} Try '{path} --help'."


def _fail(line: str, code: int) -> NoReturn:
    sys.stdout.flush()
    print(line, file=sys.stderr)
    sys.exit(code)


def main() -> None:
    _register()
    import typer

    from kawa.errors import KawaError

    try:
        code = app(prog_name="kawa", standalone_mode=False)
    except KawaError as exc:
        from rich.markup import escape

        from kawa.cli.app import err_console

        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False, markup=True)
        sys.exit(1)
    except typer.TyperException as exc:  # typer's (click's) usage errors arrive here in non-standalone mode
        exit_code = int(getattr(exc, "exit_code", 2))
        if type(exc).__name__ == "NoArgsIsHelpError":  # `kawa` or `kawa demo` alone: the help is the answer
            text = exc.format_message() if hasattr(exc, "format_message") else ""
            if text:
                print(text, file=sys.stderr)
            sys.exit(exit_code)
        _fail(usage_line(exc), exit_code)
    except typer.Abort:
        _fail("kawa: aborted.", 130)
    except KeyboardInterrupt:
        _fail("kawa: interrupted.", 130)
    except BrokenPipeError:  # `kawa … | head`: the reader left; nothing more to say
        sys.stderr.close()
        sys.exit(141)
    if isinstance(code, int) and code:  # typer.Exit(n) and Ctrl-C come back as a return value here
        sys.exit(code)
