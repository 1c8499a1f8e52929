"""``kawa up``: run the configured platform in the foreground."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from kawa.cli.app import app, console, get_config


@app.command()
def up(
    app_ref: Annotated[
        list[str] | None, typer.Option("--app", help="module:app whose functions to host (repeatable)")
    ] = None,
) -> None:
    """Start the platform (log, store watchers, functions, portal) until Ctrl-C or SIGTERM."""
    import logging

    from kawa.platform import Platform

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = get_config()
    platform = Platform(config)
    if app_ref:
        platform.extras["apps"] = list(app_ref)
    stop = threading.Event()

    def _signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _signal)
    signal.signal(signal.SIGTERM, _signal)
    platform.start()
    console.print(
        f"[bold green]kawa up[/]: home={config.home} log={config.log.uri} store={config.store.uri} "
        f"services={[s.name for s in platform.services]} — Ctrl-C to stop"
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        console.print("stopping…")
        platform.stop()
        console.print("stopped cleanly")
