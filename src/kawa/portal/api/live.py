"""The live views: the boards of the installed apps, the overview graph, and server-sent event streams of them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from kawa.errors import TopicNotFound
from kawa.portal.api.common import ERRORS, Section
from kawa.portal.apps import find_app, installed_apps
from kawa.portal.auth import Principal, get_portal, require
from kawa.portal.board_view import app_board, hidden_fields
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.sources.appboard import event_topics
from kawa.portal.views import overview

router = APIRouter(tags=["live"], responses=ERRORS)

KEEPALIVE_S = 15.0


class AppOut(BaseModel):
    name: str
    title: str
    board: bool
    page: str


class EventOut(BaseModel):
    id: str
    time: float
    data: dict[str, Any]


class View(StrEnum):
    overview = "overview"


@router.get("/api/apps", response_model=Section[AppOut], tags=["apps"])
def apps(_: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)) -> dict[str, Any]:
    """The apps running here, each with its board page."""
    return {
        "items": [
            AppOut(name=a.name, title=a.board.title if a.board else a.name, board=a.board is not None,
                   page=f"/apps/{quote(a.name)}")
            for a in installed_apps(portal.platform)
        ]
    }


@router.get("/api/apps/{app}/board", tags=["apps"])
def app_board_json(
    app: str, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """The board of ``app``: one entry per panel this role may see (``panels`` names them, in order), each
    with its ``kind`` (counters, images, table, timeseries, flow, dead_letters). Each panel needs the action
    of the endpoint that owns its data (docs/portal.md); every panel is read from one snapshot."""
    return app_board(portal, principal, app)


@router.get("/api/apps/{app}/events/{topic}", response_model=Section[EventOut], tags=["apps"])
def app_events(
    app: str,
    topic: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> dict[str, Any]:
    """The newest distinct events of a topic the app's board follows (newest first); keys of objects in
    buckets that are not PHI-free only with phi.read."""
    find_app(portal.platform, app)
    board = portal.boards.get(app)
    followed = event_topics(board.spec) if board is not None else ()
    if topic not in followed:
        raise TopicNotFound(
            f"the board of {app!r} follows no topic {topic!r}: it follows {', '.join(followed) or 'none yet'}"
        )
    assert board is not None
    phi = principal.can(Action.PHI_READ)
    rows = list(reversed(board.snapshot().events.get(topic, ())))[:limit]
    out = []
    for row in rows:
        hidden = set() if phi else hidden_fields(row.data, portal.store.phi.phi_free)
        out.append({"id": row.id, "time": row.time, "data": {k: v for k, v in row.data.items() if k not in hidden}})
    return {"items": out}


@router.get(
    "/api/apps/{app}/stream",
    response_class=StreamingResponse,
    tags=["apps"],
    responses={200: {"content": {"text/event-stream": {}}, "description": "`update` events carrying the board"}},
)
async def app_stream(
    app: str,
    request: Request,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> StreamingResponse:
    """Server-sent events: an ``update`` event with the board (as GET /api/apps/{app}/board returns it)
    each time the sampler takes a new sample."""
    find_app(portal.platform, app)
    return _streaming(request, portal, lambda: app_board(portal, principal, app))


@router.get("/api/overview")
def platform_overview(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """Buckets, topics, functions and routes as a graph with live rates (records/s)."""
    return overview(portal, principal)


def _streaming(request: Request, portal: Portal, build: Callable[[], dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(
        _events(request, portal, build),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(request: Request, portal: Portal, build: Callable[[], dict[str, Any]]) -> AsyncIterator[str]:
    stopping: asyncio.Event = request.app.state.stopping
    seen = -1
    last_sent = time.monotonic()
    step = min(0.25, portal.sampler.interval_s / 2)
    yield "retry: 2000\n\n"
    while not stopping.is_set():
        portal.sampler.watched()
        if portal.sampler.version != seen:
            seen = portal.sampler.version
            payload = await run_in_threadpool(build)
            yield f"event: update\ndata: {json.dumps(payload, default=str)}\n\n"
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent > KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_sent = time.monotonic()
        if await request.is_disconnected():
            return
        await asyncio.sleep(step)


@router.get(
    "/api/stream/{view}",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`update` events carrying the view"}},
)
async def stream(
    view: View,
    request: Request,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> StreamingResponse:
    """Server-sent events: an ``update`` event with the view (as GET /api/overview returns it) each time the
    sampler takes a new sample. App boards stream at /api/apps/{app}/stream."""
    return _streaming(request, portal, lambda: overview(portal, principal))
