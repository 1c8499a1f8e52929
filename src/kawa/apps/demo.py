"""What every app's demo shares: serving the portal beside it, and keeping the platform's log off the screen."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from kawa.platform import Platform


class Background:
    """A demo's feeder (an uploader, a replay) in a daemon thread: ``target(stop)`` runs until ``stop`` is set;
    :attr:`ended` is set once it has returned.

    Wait on :attr:`ended`, never on ``Thread.join``: on CPython 3.11 a join that Ctrl-C interrupts marks the
    thread stopped while it still runs, so every later join returns at once, and a demo would summarise before
    the feeder's last item was recorded (the X-ray demo's "counts differ" after Ctrl-C, seen in the suite)."""

    def __init__(self, target: Callable[[threading.Event], object], name: str) -> None:
        self.stop = threading.Event()
        self.ended = threading.Event()
        self._target = target
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._target(self.stop)
        finally:
            self.ended.set()

    def start(self) -> Background:
        self._thread.start()
        return self

    def running(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the feeder to end; whether it still runs (a Ctrl-C may interrupt this)."""
        return not self.ended.wait(timeout)

    def finish(self, timeout: float | None = None) -> bool:
        """Ask the feeder to stop and wait until it has returned (its last item recorded), at most ``timeout`` s;
        whether it has."""
        self.stop.set()
        return self.ended.wait(timeout)


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
