"""Serving the portal: uvicorn in a background thread, as a ``kawa up`` service or for ``kawa demo <app>``.

Binds the configured host and port (``portal.port: 0`` picks a free port; the handle's ``url`` tells which).
Stopping closes open event streams first, so shutdown takes about a second, not a keep-alive timeout.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kawa.errors import PortalError

if TYPE_CHECKING:
    import uvicorn

    from kawa.platform import Platform
    from kawa.portal.runtime import Portal

log = logging.getLogger("kawa.portal")

START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class AdminLogin:
    """One-time credentials of an admin created for an embedded demo."""

    name: str
    password: str


class PortalServer:
    """The portal on ``host``:``port``. A platform service: ``start``/``stop``; ``url`` once started."""

    name = "portal"

    def __init__(self, platform: Platform, host: str | None = None, port: int | None = None) -> None:
        self.platform = platform
        self.host = host if host is not None else platform.config.portal.host
        self.port = port if port is not None else platform.config.portal.port
        self.portal: Portal | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        import uvicorn

        from kawa.portal.app import create_app
        from kawa.portal.runtime import Portal

        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise PortalError(
                f"cannot serve the portal on {self.host}:{self.port}: {exc.strerror}; choose another port with "
                "portal.port in kawa.yaml or KAWA_PORTAL__PORT (0 picks a free one)"
            ) from exc
        self.port = sock.getsockname()[1]
        self._socket = sock
        self.portal = Portal(self.platform)
        self.platform.portal_server = self
        app = create_app(self.portal)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            proxy_headers=False,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="kawa-portal", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise PortalError(f"the portal did not start on {self.url}; see the log above for the reason")
            time.sleep(0.02)
        log.info("portal serving on %s", self.url)

    def stop(self) -> None:
        if self._server is not None:
            app = self._server.config.app
            stopping = getattr(getattr(app, "state", None), "stopping", None)
            if stopping is not None:
                stopping.set()  # end the event streams so shutdown does not wait for them
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = None
        if self.platform.portal_server is self:
            self.platform.portal_server = None

    def ensure_admin(self, name: str = "admin") -> AdminLogin | None:
        """For embedded demos: create admin ``name`` with a random password when no user exists yet and
        return its one-time credentials (None when users exist: nothing is printed twice)."""
        if self.portal is None:
            raise PortalError("start the portal before creating its first user")
        if self.portal.users.list_users():
            return None
        from kawa.portal.permissions import Role

        _user, password = self.portal.users.add_user(name, Role.ADMIN)
        return AdminLogin(name, password)


def serve(platform: Platform, *, host: str | None = None, port: int | None = None) -> PortalServer:
    """Start the portal for ``platform`` and return the running server (``.url``, ``.stop()``,
    ``.ensure_admin()``). ``kawa demo <app>`` calls this; ``kawa up`` runs it as a service."""
    server = PortalServer(platform, host, port)
    server.start()
    return server


def build_service(platform: Platform) -> PortalServer | None:
    """``kawa up``'s portal service (None when ``portal.enabled`` is false or another service runs it)."""
    if not platform.config.portal.enabled or platform.portal_server is not None:
        return None
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        log.warning("the portal is not served: install it with `pip install 'kawa[portal]'`")
        return None
    return PortalServer(platform)
