"""``GET /metrics`` in the Prometheus text format (token-protected unless ``portal.metrics_auth: false``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from kawa.errors import PermissionDenied
from kawa.portal.auth import authenticate, get_portal
from kawa.portal.metrics import build_registry
from kawa.portal.permissions import Action

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    """Topic sizes, rates and lag; function replicas, latency and errors; jobs and GPUs; model aliases;
    results by label and model version."""
    portal = get_portal(request)
    if portal.config.portal.metrics_auth:
        principal = authenticate(request, portal)
        if not principal.can(Action.VIEW):
            raise PermissionDenied("this role may not read metrics")
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = request.app.state.metrics_registry = build_registry(portal)
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
