"""The route service of ``kawa up``: runs every registered route and follows the registry.

It rescans ``<home>/routes/registry`` every ``interval`` seconds; a route whose file appeared, changed or
disappeared is started, restarted or stopped — the other routes run on undisturbed. Routes marked
``standalone`` are left to their own ``kawa routes run ID`` worker. A route file that no longer parses is
reported in the log and keeps its last good version running.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from kawa.routes.registry import RouteRegistry
from kawa.routes.runner import RouteRunner
from kawa.routes.spec import RouteSpec

if TYPE_CHECKING:
    from kawa.platform import Platform

log = logging.getLogger("kawa.routes")


class RouteService:
    name = "routes"

    def __init__(self, platform: Platform, interval: float = 1.0) -> None:
        self.platform = platform
        self.interval = interval
        self.registry = RouteRegistry.for_home(platform.config.home)
        self.runner = RouteRunner(platform.backends)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._digests: dict[str, str] = {}
        self._wanted: dict[str, RouteSpec] = {}

    def start(self) -> None:
        self.platform.route_runner = self.runner
        self.refresh()
        self._thread = threading.Thread(target=self._watch, name="routes-watch", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        """Read the registry and bring the running routes in line with it."""
        snapshot = self.registry.snapshot()
        digests = {route_id: digest for route_id, (digest, _, _) in snapshot.items()}
        if digests == self._digests and all(w.alive for w in self.runner.workers.values()):
            return
        wanted: dict[str, RouteSpec] = {}
        for route_id, (digest, spec, error) in snapshot.items():
            if error is not None:
                if self._digests.get(route_id) != digest:
                    log.error("route %s: %s (keeping its last good version)", route_id, error)
                if route_id in self._wanted:
                    wanted[route_id] = self._wanted[route_id]
                continue
            if spec is not None and not spec.standalone:
                wanted[route_id] = spec
        self._digests = digests
        self._wanted = wanted
        self.runner.sync(wanted)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:
                log.exception("route registry scan failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.runner.stop()
        if self.platform.route_runner is self.runner:
            self.platform.route_runner = None


def build_service(platform: Platform) -> RouteService:
    return RouteService(platform)
