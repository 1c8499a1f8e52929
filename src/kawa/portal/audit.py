"""The portal's audit middleware: one audit record per mutating request and per PHI read (docs/portal.md).

Every response carries its request id in ``X-Request-ID``; the record with that id says who asked, for which
action (the one the route requires from the permission map), on which resource, and how it ended. Requests that
change nothing and read no PHI are not recorded. The record is on the log before the response leaves.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from kawa.audit.record import AuditRecord
from kawa.portal.auth import SAFE_METHODS, AuditNotes, audit_notes

if TYPE_CHECKING:
    from kawa.portal.runtime import Portal

__all__ = ["REQUEST_ID_HEADER", "install", "record_for", "result_of"]

log = logging.getLogger("kawa.portal.audit")

REQUEST_ID_HEADER = "X-Request-ID"
DENIED = frozenset({401, 403, 429})


def result_of(status: int) -> str:
    """``ok`` below 400, ``denied`` for a refused login, permission or throttled attempt, else ``error``."""
    if status < 400:
        return "ok"
    return "denied" if status in DENIED else "error"


def record_for(method: str, path: str, user: str | None, notes: AuditNotes, status: int,
               request_id: str) -> AuditRecord | None:  # fmt: skip
    """The audit record of one request, or None for a request that changed nothing and read no PHI."""
    phi = notes.phi_read or notes.action == "phi.read"
    if method.upper() in SAFE_METHODS and not phi:
        return None
    action = "phi.read" if phi and method.upper() in SAFE_METHODS else notes.action or method.lower()
    return AuditRecord(user=user or "anonymous", action=action, resource=path, result=result_of(status),
                       request_id=request_id, status=status)  # fmt: skip


def install(app: FastAPI, portal: Portal) -> None:
    """Add the audit middleware to ``app``: records go to ``portal.audit``."""

    async def write(request: Request, status: int, request_id: str) -> None:
        principal, notes = getattr(request.state, "principal", None), audit_notes(request)
        user = principal.user.name if principal is not None else notes.user
        record = record_for(request.method, request.url.path, user, notes, status, request_id)
        if record is None:
            return
        try:
            await run_in_threadpool(portal.audit.append, record)
        except Exception:  # the action is done; its record stays queued in the producer (Kafka) or is lost here
            log.error("could not write the audit record of request %s (%s): is the log reachable?", request_id,
                      record.action)  # fmt: skip

    @app.middleware("http")
    async def audit(request: Request, call_next):  # type: ignore[no-untyped-def]
        request_id = uuid.uuid4().hex
        audit_notes(request)  # in the request's shared state, where the route's dependencies fill it in
        try:
            response: Response = await call_next(request)
        except Exception:
            await write(request, 500, request_id)
            raise
        response.headers[REQUEST_ID_HEADER] = request_id
        await write(request, response.status_code, request_id)
        return response
