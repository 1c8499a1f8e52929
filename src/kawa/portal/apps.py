"""The apps installed here, as the portal sees them: a name, what the app declares, and its board.

The platform starts the apps it discovers and keeps them as ``platform.apps`` (name → running app); the
portal reads only the attributes of :class:`AppView` and never names an app in its code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from kawa.errors import NotConfigured

if TYPE_CHECKING:
    from kawa.apps.board import BoardSpec
    from kawa.apps.plugin import Declared

NO_APPS = "no app is running here: start one with `kawa demo <app>` (it serves this portal) or `kawa up`"


class AppNotRunning(NotConfigured):
    """The portal was asked for the board of an app that is not installed or not running here."""


class AppView(Protocol):
    """A running app: ``declared`` holds its validated settings, buckets (with ``phi``) and topics;
    ``board`` the panels the portal draws (None: the app has no board). A running app may also hold a
    ``routes`` (the runner of its data routes, or None) for live route statistics."""

    @property
    def name(self) -> str: ...

    @property
    def declared(self) -> Declared: ...

    @property
    def board(self) -> BoardSpec | None: ...


def installed_apps(platform: Any) -> list[AppView]:
    """The apps running on ``platform``, by name."""
    apps: Any = getattr(platform, "apps", None) or {}
    return [apps[name] for name in sorted(apps)]


def find_app(platform: Any, name: str) -> AppView:
    """The running app ``name``; :class:`AppNotRunning` saying how to start it otherwise."""
    for app in installed_apps(platform):
        if app.name == name:
            return app
    running = ", ".join(a.name for a in installed_apps(platform)) or "none"
    raise AppNotRunning(
        f"no app named {name!r} is running here (running: {running}): start it with `kawa demo {name}` "
        "or install it and run `kawa up`"
    )


def phi_free_buckets(platform: Any) -> set[str]:
    """The buckets the running apps declare PHI-free."""
    return {bucket for app in installed_apps(platform) for bucket in app.declared.phi_free_buckets()}
