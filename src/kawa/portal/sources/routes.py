"""Data routes as the portal sees them: the routes running in this process (``platform.extras["routes"]``,
published by ``kawa up``'s route service)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kawa.errors import NotConfigured, RouteNotFound

if TYPE_CHECKING:
    from kawa.platform import Platform

NO_ROUTES = "no route runner runs in this process; apply routes with `kawa routes apply routes.yaml` and run `kawa up`"


@dataclass(frozen=True)
class RouteView:
    id: str
    source: str
    target: str | None
    steps: tuple[str, ...]
    dead_letter: str | None
    state: str = "running"
    stats: dict[str, Any] = field(default_factory=dict)


def _uri(endpoint: Any) -> str | None:
    if endpoint is None:
        return None
    uri = getattr(endpoint, "uri", None)
    return str(uri if uri is not None else endpoint)


def _step_name(step: Any) -> str:
    for attr in ("name", "processor"):
        value = getattr(step, attr, None)
        if isinstance(value, str):
            return value
    if isinstance(step, dict) and step:
        return str(next(iter(step)))
    return str(step)


def view_of(spec: Any, state: str = "running", stats: dict[str, Any] | None = None) -> RouteView:
    errors = getattr(spec, "errors", None)
    return RouteView(
        id=str(spec.id),
        source=_uri(getattr(spec, "from_", None) or getattr(spec, "source", None)) or "",
        target=_uri(getattr(spec, "to", None)),
        steps=tuple(_step_name(s) for s in getattr(spec, "steps", ()) or ()),
        dead_letter=_uri(getattr(errors, "dead_letter", None)) if errors is not None else None,
        state=state,
        stats=dict(stats or {}),
    )


class RoutesSource:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def runner(self) -> Any:
        runner = self.platform.extras.get("routes")
        if runner is None:
            raise NotConfigured(NO_ROUTES)
        return runner

    def available(self) -> tuple[bool, str | None]:
        return (True, None) if self.platform.extras.get("routes") is not None else (False, NO_ROUTES)

    def routes(self) -> list[RouteView]:
        runner = self.runner()
        return sorted((view_of(spec) for spec in runner.specs()), key=lambda r: r.id)

    def route(self, route_id: str) -> RouteView:
        for view in self.routes():
            if view.id == route_id:
                return view
        raise RouteNotFound(f"no route {route_id!r}; `kawa routes list` shows the running ones")
