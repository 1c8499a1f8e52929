"""The portal's FastAPI application: the JSON API (OpenAPI at ``/docs``), the web UI, ``/metrics``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from kawa.errors import InvalidCredentials, KawaError
from kawa.portal.api.common import kawa_error_response, status_for

if TYPE_CHECKING:
    from kawa.portal.runtime import Portal

STATIC = Path(__file__).parent / "web" / "static"

DESCRIPTION = """\
Everything Kawa's CLI can do, over HTTP. Authenticate with `Authorization: Bearer <token>` (create one with
`kawa users token NAME`, or `POST /api/me/tokens` from a session). Listings of a capability that is absent in
this platform answer `configured: false` with the reason; actions on it answer 409. Roles and the actions they
may take: `docs/portal.md`.
"""


def create_app(portal: Portal) -> FastAPI:
    """The application for ``portal`` (whose sampler it starts and stops with the server)."""
    from kawa.portal.api import (
        account,
        buckets,
        deadletters,
        experiments,
        functions,
        jobs,
        live,
        loop,
        models,
        monitoring,
        projects,
        topics,
    )  # fmt: skip
    from kawa.portal.api import audit as audit_api
    from kawa.portal.web import audit_page, experiments_page, loop_page, monitoring_page, pages, projects_page, sso

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.stopping = asyncio.Event()
        portal.start()
        try:
            yield
        finally:
            app.state.stopping.set()
            portal.stop()

    app = FastAPI(
        title="Kawa portal",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.portal = portal
    app.state.stopping = asyncio.Event()

    async def kawa_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, KawaError)
        if not request.url.path.startswith(("/api/", "/metrics")):
            if isinstance(exc, InvalidCredentials) and request.method == "GET":
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
            return pages.error_page(request, str(exc), status_for(exc))
        return kawa_error_response(request, exc)

    app.add_exception_handler(KawaError, kawa_error)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith("/docs"):
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                "frame-ancestors 'none'; form-action 'self'",
            )
        return response

    from kawa.portal import audit

    audit.install(app, portal)
    for module in (account, topics, buckets, functions, jobs, models, monitoring, experiments, loop, deadletters, live,
                   audit_api, projects):  # fmt: skip
        app.include_router(module.router)
    from kawa.portal.api import metrics_route

    app.include_router(metrics_route.router)
    app.include_router(pages.router)
    app.include_router(sso.router)
    app.include_router(audit_page.router)
    app.include_router(experiments_page.router)
    app.include_router(loop_page.router)
    app.include_router(monitoring_page.router)
    app.include_router(projects_page.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
