"""The live views: the X-ray board, the overview graph, results, and server-sent event streams of them."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from kawa.portal.api.common import ERRORS, Section, not_configured
from kawa.portal.auth import Principal, get_portal, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.views import board, overview

router = APIRouter(tags=["live"], responses=ERRORS)

KEEPALIVE_S = 15.0


class ResultOut(BaseModel):
    time: float
    object: str | None
    processed_key: str | None
    model: str | None
    version: int | None
    risk: float | None
    label: str | None
    latency_ms: float | None
    event_id: str | None
    event_source: str | None = None


class ResultsSummaryOut(BaseModel):
    total: int
    by_label: dict[str, int]
    by_version: dict[str, int]


class View(StrEnum):
    board = "board"
    overview = "overview"


@router.get("/api/xray/board")
def xray_board(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """Counts uploaded/processed/anonymized/dead-lettered, newest objects (incoming ones only with phi.read),
    risk distribution and images per model version over time, risk-assessment replicas, end-to-end latency,
    and the last dead letters (only with deadletters.read). ``panels`` names the panels this role may see:
    each needs the action of the endpoint that owns its data (docs/portal.md)."""
    return board(portal, principal)


@router.get("/api/overview")
def platform_overview(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """Buckets, topics, functions and routes as a graph with live rates (records/s)."""
    return overview(portal, principal)


@router.get("/api/results", response_model=Section[ResultOut], tags=["results"])
def results(
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> dict[str, Any]:
    """The newest results (the incoming object's key only with phi.read)."""
    ok, reason = portal.xray.available()
    if not ok:
        return not_configured(reason)
    phi = principal.can(Action.PHI_READ)
    return {"items": [r.to_dict() | ({} if phi else {"object": None}) for r in portal.xray.results(limit)]}


@router.get("/api/results/summary", response_model=ResultsSummaryOut, tags=["results"])
def results_summary(
    _: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> ResultsSummaryOut:
    portal.xray.require()
    tail = portal.xray.tail()
    counts = tail.counts() if tail is not None else {"label": Counter(), "version": Counter()}
    return ResultsSummaryOut(
        total=sum(counts["label"].values()), by_label=dict(counts["label"]), by_version=dict(counts["version"])
    )


def _builder(view: View, portal: Portal, principal: Principal) -> Callable[[], dict[str, Any]]:
    if view is View.board:
        return lambda: board(portal, principal)
    return lambda: overview(portal, principal)


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
    """Server-sent events: an ``update`` event with the view (as GET /api/xray/board or /api/overview return
    it) each time the sampler takes a new sample."""
    return StreamingResponse(
        _events(request, portal, _builder(view, portal, principal)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
