"""The portal: one web application for every persona — a JSON API (OpenAPI at ``/docs``), a server-rendered
UI that updates live over server-sent events, and Prometheus ``/metrics``. See ``docs/portal.md``.

``kawa up`` serves it (service factory :func:`kawa.portal.server.build_service`); apps and demos start it
with :func:`serve`::

    server = kawa.portal.serve(platform)     # -> PortalServer: .url, .stop(), .ensure_admin()

FastAPI and uvicorn are imported when the portal starts, not with this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kawa.platform import Platform
    from kawa.portal.server import AdminLogin, PortalServer

__all__ = ["AdminLogin", "PortalServer", "serve"]


def serve(platform: Platform, *, host: str | None = None, port: int | None = None) -> PortalServer:
    """Start the portal for ``platform`` in a background thread; see :func:`kawa.portal.server.serve`."""
    from kawa.portal.server import serve as _serve

    return _serve(platform, host=host, port=port)


def __getattr__(name: str) -> Any:
    if name in ("AdminLogin", "PortalServer"):
        from kawa.portal import server

        return getattr(server, name)
    raise AttributeError(f"module 'kawa.portal' has no attribute {name!r}")
