"""``kawa up``: run the configured platform in the foreground."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kawa.cli.app import app, console, get_config
from kawa.cli.signals import stop_on_signals

if TYPE_CHECKING:
    from kawa.platform import Platform


@app.command()
def up(
    app_ref: Annotated[
        list[str] | None,
        typer.Option(
            "--app", help="module:app whose functions to host, or module:plugin of an app to start (repeatable)"
        ),
    ] = None,
) -> None:
    """Start the platform (log, store watchers, functions, apps, portal) until Ctrl-C or SIGTERM."""
    import logging

    from kawa.platform import Platform

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = get_config()
    platform = Platform(config)
    if app_ref:
        platform.app_refs = list(app_ref)
    with stop_on_signals() as stop:
        platform.start()
        console.print(
            f"[bold green]kawa up[/]: home={config.home} log={config.log.uri} store={config.store.uri} "
            f"services={[s.name for s in platform.services]} — Ctrl-C to stop"
        )
        _portal_hint(platform)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            console.print("stopping…")
            platform.stop()
            console.print("stopped cleanly")


def _portal_hint(platform: Platform) -> None:
    """Where the portal is and how to sign in to it (nothing when this process serves no portal)."""
    server = platform.portal_server
    url = getattr(server, "url", None)
    if url is None:
        if platform.config.portal.enabled:
            console.print("portal: not served by this process (see the log above)")
        return
    portal = getattr(server, "portal", None)
    users = portal.users.list_users() if portal is not None else []
    if users:
        hint = (
            f"sign in as one of the {len(users)} portal users ([bold]kawa users list[/]; "
            "[bold]kawa users reset-password NAME[/] prints a new password)"
        )
    else:
        hint = "no portal users yet: create one with [bold]kawa users add admin --role admin[/] (prints its password)"
    console.print(f"portal: [bold link={url}]{url}[/] — {hint}", soft_wrap=True)
