"""Data routes as the portal sees them: the routes registered under the Kawa home (what ``kawa routes apply``
stores and ``kawa up`` runs), merged with the routes running in this process — those of ``kawa up``'s route
service and those of each running app (``platform.route_runners()``), which bring live statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kawa.errors import NotConfigured, RouteNotFound

if TYPE_CHECKING:
    from kawa.platform import Platform
    from kawa.routes.runner import RouteRunner

NO_ROUTES = "data routes are not available in this installation (kawa.routes is missing)"


@dataclass(frozen=True)
class RouteView:
    id: str
    source: str  # URI with its options as a query string, e.g. topic:images?group=deid
    target: str | None
    steps: tuple[str, ...]
    dead_letter: str | None
    state: str = "running"
    stats: dict[str, Any] = field(default_factory=dict)


def _uri(endpoint: Any) -> str:
    options = "&".join(f"{k}={v}" for k, v in sorted(endpoint.options.items()) if isinstance(v, str | int))
    return f"{endpoint.uri}?{options}" if options else str(endpoint.uri)


def _step_name(step: Any) -> str:
    if isinstance(step, dict) and step:
        return str(next(iter(step)))
    return str(step)


class RoutesSource:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def runners(self) -> list[RouteRunner]:
        return self.platform.route_runners()

    def registry(self) -> Any:
        try:
            from kawa.routes.registry import RouteRegistry
        except ImportError as exc:
            raise NotConfigured(NO_ROUTES) from exc
        return RouteRegistry.for_home(self.platform.config.home)

    def available(self) -> tuple[bool, str | None]:
        try:
            self.registry()
        except NotConfigured as exc:
            return False, str(exc)
        return True, None

    def routes(self) -> list[RouteView]:
        """Registered routes (state ``registered`` unless running here) and the routes running here."""
        views: dict[str, RouteView] = {}
        for spec in self.registry().list():
            views[spec.id] = _view(spec, None, "registered")
        for runner in self.runners():
            for spec in runner.specs():
                worker = runner.workers.get(spec.id)
                views[spec.id] = _view(spec, worker, "running")
        return sorted(views.values(), key=lambda r: r.id)

    def apply(self, text: str) -> list[tuple[str, str]]:
        """Validate and register the routes in YAML ``text`` (as ``kawa routes apply``)."""
        from kawa.errors import InvalidRoute
        from kawa.routes.runner import validate_route
        from kawa.routes.spec import load_routes

        specs = load_routes(text, "request body")
        if not specs:
            raise InvalidRoute("the body holds no routes; send YAML `routes: [{id, from, steps, to}, ...]`")
        for spec in specs:
            validate_route(spec, "request body")
        results: list[tuple[str, str]] = self.registry().apply(specs)
        return results

    def delete(self, route_id: str) -> None:
        self.registry().delete(route_id)

    def route(self, route_id: str) -> RouteView:
        for view in self.routes():
            if view.id == route_id:
                return view
        raise RouteNotFound(f"no route {route_id!r}; `kawa routes list` shows the registered ones")


def _view(spec: Any, worker: Any, state: str) -> RouteView:
    stats = asdict(worker.stats) if worker is not None else {}
    if worker is not None:
        state = str(stats.get("state", "running")) if worker.alive else "stopped"
    dead = spec.errors.dead_letter
    return RouteView(
        id=spec.id,
        source=_uri(spec.from_),
        target=", ".join(_uri(t) for t in spec.to) or None,
        steps=tuple(_step_name(s) for s in spec.steps),
        dead_letter=_uri(dead) if dead is not None else f"topic:routes.{spec.id}.dlq",
        state=state,
        stats=stats,
    )
