"""Many routes in one process: add, replace and remove routes at runtime without touching the others.

:class:`RouteRunner` owns one worker thread per route, all sharing the platform's backends and one progress
store. :meth:`RouteRunner.sync` moves to a wanted set of routes: new ones start, changed ones restart,
removed ones stop; routes whose definition is unchanged are not touched. The route service of ``kawa up``
(:mod:`kawa.routes.service`) calls it whenever the registry changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kawa.errors import InvalidRoute, RouteNotFound
from kawa.routes.components.base import RouteContext, known_components
from kawa.routes.progress import ProgressStore
from kawa.routes.spec import RouteSpec

if TYPE_CHECKING:
    from kawa.backends import Backends
    from kawa.config import KawaConfig
    from kawa.routes.worker import RouteWorker

log = logging.getLogger("kawa.routes")


def validate_route(spec: RouteSpec, origin: str = "") -> None:
    """Check what can be checked without running: endpoint schemes and processor names (with lines)."""
    from kawa.routes.processors import _resolve, _split_step
    from kawa.routes.spec import line_of

    known = known_components()
    at = f"{origin}: " if origin else ""
    if spec.from_.scheme not in known["sources"]:
        raise InvalidRoute(
            f"{at}route {spec.id!r}: unknown source component {spec.from_.uri!r}; known sources: "
            + ", ".join(f"{s}:" for s in known["sources"])
        )
    for endpoint in [*spec.to, *([spec.errors.dead_letter] if spec.errors.dead_letter else [])]:
        if endpoint.scheme not in known["sinks"]:
            raise InvalidRoute(
                f"{at}route {spec.id!r}: unknown sink component {endpoint.uri!r}; known sinks: "
                + ", ".join(f"{s}:" for s in known["sinks"])
            )
    for number, step in enumerate(spec.steps, start=1):
        if callable(step) and not isinstance(step, Mapping | str):
            continue
        line = line_of(step)
        where = f"{origin} line {line}: " if origin and line else at
        try:
            name, _ = _split_step(step)
            _resolve(name)
        except InvalidRoute as exc:
            raise InvalidRoute(f"{where}route {spec.id!r} step {number}: {exc}") from exc


class RouteRunner:
    """Runs routes as threads of this process, on the backends it is given (which it never closes, unless
    :meth:`local` opened them)."""

    def __init__(self, backends: Backends) -> None:
        self.backends = backends
        self.config = backends.config
        self._owns_backends = False
        self.progress = ProgressStore(self.config.path("routes", "progress.db"))
        self.workers: dict[str, RouteWorker] = {}
        self._specs: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def local(cls, config: KawaConfig | None = None) -> RouteRunner:
        """A runner on backends opened from ``config`` (default: ``kawa.yaml``), closed by :meth:`stop`."""
        from kawa.backends import open_backends

        runner = cls(open_backends(config))
        runner._owns_backends = True
        return runner

    def context(self, route_id: str) -> RouteContext:
        return RouteContext(route_id=route_id, config=self.config, progress=self.progress, backends=self.backends)

    def add(self, spec: RouteSpec) -> RouteWorker:
        """Start ``spec``; a running route with the same id and a different definition is replaced."""
        from kawa.routes.worker import RouteWorker

        validate_route(spec)
        with self._lock:
            current = self.workers.get(spec.id)
            if current is not None and self._specs.get(spec.id) == spec and current.alive:
                return current
            if current is not None:
                current.stop()
            worker = RouteWorker(spec, self.context(spec.id))
            worker.start()
            self.workers[spec.id] = worker
            self._specs[spec.id] = spec
            log.info("route %s %s", spec.id, "replaced" if current is not None else "started")
            return worker

    def remove(self, route_id: str) -> None:
        with self._lock:
            worker = self.workers.pop(route_id, None)
            self._specs.pop(route_id, None)
        if worker is None:
            raise RouteNotFound(f"route {route_id!r} is not running here")
        worker.stop()
        log.info("route %s stopped", route_id)

    def sync(self, wanted: Mapping[str, RouteSpec]) -> None:
        """Run exactly ``wanted``: start new routes, replace changed ones, stop the rest; keep the unchanged."""
        for route_id in [r for r in self.workers if r not in wanted]:
            self.remove(route_id)
        for route_id, spec in wanted.items():
            if self._specs.get(route_id) != spec or route_id not in self.workers or not self.workers[route_id].alive:
                try:
                    self.add(spec)
                except InvalidRoute as exc:
                    log.error("route %s not started: %s", route_id, exc)

    def specs(self) -> list[RouteSpec]:
        """The routes running here (the portal lists them)."""
        with self._lock:
            return list(self._specs.values())

    def stop(self) -> None:
        for route_id in list(self.workers):
            self.remove(route_id)
        self.progress.close()
        if self._owns_backends:
            self.backends.close()
