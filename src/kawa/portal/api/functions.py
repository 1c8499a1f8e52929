"""Functions and routes: what runs, on which topics, and how it is doing (replicas, in-flight, rate,
latency percentiles, errors, dead letters)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from kawa.errors import KawaError
from kawa.portal.api.common import ERRORS, Section, not_configured
from kawa.portal.auth import Principal, get_portal, may_in, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.sources.functions import FunctionView
from kawa.portal.sources.log import total_records

router = APIRouter(tags=["functions"], responses=ERRORS)

NAME = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]


class FunctionOut(BaseModel):
    name: str = Field(description="app.function")
    app: str
    function: str
    topic: str
    group: str
    reply_topic: str | None
    dead_letter_topic: str
    bucket: str | None
    concurrency: int
    min_scale: int
    max_scale: int
    replicas: int
    desired_replicas: int
    panicking: bool
    in_flight: int
    queued: int
    received: int
    succeeded: int
    errors: int = Field(description="failed attempts (each retry counts)")
    retries: int
    dead_lettered: int
    dead_letters_on_topic: int | None = Field(None, description="records now held by the dead-letter topic")
    rate_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    end_to_end_p99_ms: float | None
    lag: int | None = None


class PointOut(BaseModel):
    t: float
    replicas: int
    desired_replicas: int
    in_flight: int
    rate_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    end_to_end_p99_ms: float | None


ROUTE_ID = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9._-]*$")]


class RoutesIn(BaseModel):
    yaml: str = Field(min_length=1, max_length=200_000, description="routes YAML, as `kawa routes apply` reads")


class AppliedOut(BaseModel):
    id: str
    outcome: str = Field(description="created, replaced or unchanged")


class RouteOut(BaseModel):
    id: str
    source: str
    target: str | None
    steps: list[str]
    dead_letter: str | None
    state: str
    stats: dict[str, Any] = {}


def function_out(portal: Portal, view: FunctionView) -> FunctionOut:
    spec, s = view.spec, view.stats
    dlq: int | None
    try:
        dlq = total_records(portal.log.describe(spec.dead_letter_topic))
    except KawaError:
        dlq = None
    lag = sum(r.lag for r in portal.log.lag(spec.group, [spec.topic]))
    return FunctionOut(
        name=view.name,
        app=spec.app,
        function=spec.name,
        topic=spec.topic,
        group=spec.group,
        reply_topic=spec.reply_topic,
        dead_letter_topic=spec.dead_letter_topic,
        bucket=spec.bucket,
        concurrency=spec.concurrency,
        min_scale=spec.min_scale,
        max_scale=spec.max_scale,
        replicas=s.replicas,
        desired_replicas=s.desired_replicas,
        panicking=s.panicking,
        in_flight=s.in_flight,
        queued=s.queued,
        received=s.received,
        succeeded=s.succeeded,
        errors=s.failed_attempts,
        retries=s.retries,
        dead_lettered=s.dead_lettered,
        dead_letters_on_topic=dlq,
        rate_per_s=s.rate_per_s,
        latency_p50_ms=s.latency_p50_ms,
        latency_p99_ms=s.latency_p99_ms,
        end_to_end_p99_ms=s.end_to_end_p99_ms,
        lag=lag,
    )


def function_project(portal: Portal, view: FunctionView) -> str | None:
    """The registered project a function belongs to: the one that owns its trigger (its bucket ``P--x``, else
    its topic ``P.x``); None for a function of ``default``."""
    spec = view.spec
    return portal.projects.owner("bucket", spec.bucket) if spec.bucket else portal.projects.owner("topic", spec.topic)


def visible_functions(principal: Principal, portal: Portal) -> list[FunctionView]:
    """The functions ``principal`` may view: ``default``'s, and those of the projects they may view."""
    may_view = portal.projects.may_view_label(principal.user)
    return [v for v in portal.functions.functions() if (p := function_project(portal, v)) is None or may_view(p)]


def viewed_function(principal: Principal, portal: Portal, name: str) -> FunctionView:
    """Function ``name``, checked as (user, its project, view)."""
    view = portal.functions.function(name)
    may_in(principal, portal, function_project(portal, view), Action.VIEW, f"function {name!r}")
    return view


@router.get("/api/functions", response_model=Section[FunctionOut])
def list_functions(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """The functions you may view (a project's: the one that owns its trigger bucket or topic)."""
    ok, reason = portal.functions.available()
    if not ok:
        return not_configured(reason)
    return {"items": [function_out(portal, v) for v in visible_functions(principal, portal)]}


@router.get("/api/functions/{name}", response_model=FunctionOut)
def get_function(
    name: NAME, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> FunctionOut:
    return function_out(portal, viewed_function(principal, portal, name))


@router.get("/api/functions/{name}/history", response_model=list[PointOut])
def function_history(
    name: NAME,
    since: Annotated[float, Query(ge=0, description="epoch seconds")] = 0.0,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> list[dict[str, Any]]:
    """Replicas, in-flight, rate and latency sampled over time (the last ~10 minutes at the fast tick)."""
    view = viewed_function(principal, portal, name)
    return portal.sampler.history(view.name, since)


def _route_out(r: Any) -> RouteOut:
    return RouteOut(
        id=r.id,
        source=r.source,
        target=r.target,
        steps=list(r.steps),
        dead_letter=r.dead_letter,
        state=r.state,
        stats=r.stats,
    )


def endpoint_projects(portal: Portal, uris: list[str | None]) -> set[str | None]:
    """The projects the endpoints ``uris`` (``topic:P.x?…``, ``bucket:P--x``, ``file:…``) belong to: a topic's or
    a bucket's registered project by its prefix, None (``default``) for the others."""
    out: set[str | None] = set()
    for uri in uris:
        if uri is None:
            continue
        kind, _, rest = uri.partition(":")
        name = rest.lstrip("/").split("?", 1)[0].split("/", 1)[0]
        out.add(portal.projects.owner(kind, name) if kind in ("topic", "bucket") and name else None)
    return out or {None}


def _route_projects(portal: Portal, r: Any) -> set[str | None]:
    sinks: list[str | None] = [t for t in (r.target or "").split(", ") if t]
    dead = None if r.dead_letter == f"topic:routes.{r.id}.dlq" else r.dead_letter  # the default follows the route
    return endpoint_projects(portal, [r.source, *sinks, dead])


def _may_on_route(principal: Principal, portal: Portal, projects: set[str | None], action: Action, what: str) -> None:
    for project in sorted(projects, key=lambda p: p or ""):
        may_in(principal, portal, project, action, what)


@router.get("/api/routes", response_model=Section[RouteOut], tags=["routes"])
def list_routes(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """Registered routes (``kawa routes apply``) and the routes running in this process, with live stats: those
    whose endpoints all belong to projects you may view."""
    ok, reason = portal.routes.available()
    if not ok:
        return not_configured(reason)
    return {"items": [_route_out(r) for r in visible_routes(principal, portal)]}


def visible_routes(principal: Principal, portal: Portal) -> list[Any]:
    """The routes whose endpoints all belong to projects ``principal`` may view (``default``'s count as viewable)."""
    may_view = portal.projects.may_view_label(principal.user)
    return [r for r in portal.routes.routes() if all(p is None or may_view(p) for p in _route_projects(portal, r))]


@router.get("/api/routes/{route_id}", response_model=RouteOut, tags=["routes"])
def get_route(
    route_id: ROUTE_ID, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> RouteOut:
    view = portal.routes.route(route_id)
    _may_on_route(principal, portal, _route_projects(portal, view), Action.VIEW, f"route {route_id!r}")
    return _route_out(view)


@router.post("/api/routes", response_model=list[AppliedOut], tags=["routes"])
def apply_routes(
    body: RoutesIn, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> list[AppliedOut]:
    """Validate and register routes (as ``kawa routes apply``); ``kawa up`` starts or restarts them. Each route
    needs ``routes.manage`` in every project its endpoints belong to (a route reads and writes them all)."""
    from kawa.routes.spec import load_routes

    specs = load_routes(body.yaml, "request body")
    if not specs:
        may_in(principal, portal, None, Action.ROUTES_MANAGE, "routes")
    for spec in specs:
        uris = [spec.from_.uri, *(e.uri for e in spec.to),
                spec.errors.dead_letter.uri if spec.errors.dead_letter is not None else None]  # fmt: skip
        _may_on_route(principal, portal, endpoint_projects(portal, uris), Action.ROUTES_MANAGE, f"route {spec.id!r}")
    principal.notes.action = Action.ROUTES_MANAGE.value
    return [AppliedOut(id=route_id, outcome=outcome) for route_id, outcome in portal.routes.apply(body.yaml)]


@router.delete("/api/routes/{route_id}", status_code=204, tags=["routes"])
def delete_route(
    route_id: ROUTE_ID, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> None:
    """Unregister a route; ``kawa up`` stops it (the others run on). ``routes.manage`` in its endpoints' projects."""
    view = portal.routes.route(route_id)
    _may_on_route(principal, portal, _route_projects(portal, view), Action.ROUTES_MANAGE, f"route {route_id!r}")
    portal.routes.delete(route_id)
