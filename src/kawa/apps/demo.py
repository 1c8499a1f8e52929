"""What every app's demo shares: serving the portal beside it, and keeping the platform's log off the screen."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from kawa.platform import Platform


def log_to_file(platform: Platform, app: str) -> Path:
    """Send the platform's log records to ``<home>/<app>/demo.log`` (a warning, such as a dead-lettered
    input, would tear a live view); the file's path."""
    path = Path(platform.config.home) / app / "demo.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("kawa")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return path


def serve_portal(platform: Platform, console: Console) -> Any:
    """Serve the portal for ``platform`` and print its URL and how to sign in (with a first admin's one-time
    password on a fresh home); the server (``.stop()``), or None when the portal is not installed or failed
    to start (the demo then runs without it)."""
    try:
        import kawa.portal as portal_module

        server = portal_module.serve(platform)
    except (ImportError, AttributeError):
        return None
    except Exception as exc:  # the demo runs without its portal rather than not at all
        console.print(f"[yellow]portal not started: {exc}[/]")
        return None
    login = server.ensure_admin() if hasattr(server, "ensure_admin") else None
    if login is not None:
        hint = f" (user {login.name}, password {login.password}; shown once)"
    else:
        hint = (
            " (sign in with a portal user: admin's password was shown on the first run; "
            "[bold]kawa users reset-password admin[/] prints a new one)"
        )
    console.print(f"portal: [bold link={server.url}]{server.url}[/]{hint}")
    return server
