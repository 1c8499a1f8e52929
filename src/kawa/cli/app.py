"""The Typer application and the options every command shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from kawa.config import KawaConfig

app = typer.Typer(
    name="kawa",
    help="Kawa: event-driven MLOps — object store notifications, event log, functions, models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


@dataclass
class Globals:
    config_path: Path | None = None
    home: Path | None = None
    log_uri: str | None = None
    store_uri: str | None = None


_globals = Globals()


@app.callback()
def _root(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="kawa.yaml to use (default: ./kawa.yaml or $KAWA_CONFIG)")
    ] = None,
    home: Annotated[Path | None, typer.Option("--home", help="Kawa home directory (default ./.kawa)")] = None,
    log: Annotated[
        str | None, typer.Option("--log", help="event log URI: embedded:, a path, or kafka://host:port")
    ] = None,
    store: Annotated[str | None, typer.Option("--store", help="object store URI: file:, a path, or s3://")] = None,
) -> None:
    _globals.config_path, _globals.home = config, home
    _globals.log_uri, _globals.store_uri = log, store


def get_config(**extra: Any) -> KawaConfig:
    """The configuration with the global command-line options applied."""
    from kawa.config import load_config

    overrides: dict[str, Any] = dict(extra)
    if _globals.home is not None:
        overrides["home"] = str(_globals.home)
    if _globals.log_uri is not None:
        overrides.setdefault("log", {})["uri"] = _globals.log_uri
    if _globals.store_uri is not None:
        overrides.setdefault("store", {})["uri"] = _globals.store_uri
    return load_config(_globals.config_path, **overrides)
