"""The ``kawa`` command line. Command modules import heavy SDKs only inside their commands."""

from __future__ import annotations

import sys

from kawa.cli.app import app


def _register() -> None:
    # Each module adds its commands to ``app`` on import; they are light (typer only).
    from kawa.cli import log_cmds, platform_cmds  # noqa: F401

    optional_modules = (
        "store_cmds", "function_cmds", "model_cmds", "route_cmds", "demo_cmds", "xray_cmds", "portal_cmds",
    )
    for optional in optional_modules:
        try:
            __import__(f"kawa.cli.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"kawa.cli.{optional}":
                raise


def main() -> None:
    _register()
    from kawa.errors import KawaError

    try:
        app(standalone_mode=False)
    except KawaError as exc:
        from rich.markup import escape

        from kawa.cli.app import err_console

        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False, markup=True)
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as exc:  # click's own usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise
