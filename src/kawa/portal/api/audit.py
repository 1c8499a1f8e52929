"""``GET /api/audit``: the audit trail, for admins (``audit.read``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from kawa.audit.record import RESULTS
from kawa.audit.trail import AuditFilter, read_audit
from kawa.portal.api.common import ERRORS
from kawa.portal.auth import Principal, get_portal, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal

router = APIRouter(prefix="/api", tags=["audit"], responses=ERRORS)


class AuditOut(BaseModel):
    user: str
    project: str
    action: str
    resource: str
    result: str
    status: int
    time: datetime
    request_id: str


@router.get("/audit", response_model=list[AuditOut])
def list_audit(
    user: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    result: Annotated[str | None, Query(pattern="^(" + "|".join(RESULTS) + ")$")] = None,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    _: Principal = Depends(require(Action.AUDIT_READ)),
    portal: Portal = Depends(get_portal),
) -> list[AuditOut]:
    """Audit records, newest last: every mutating request and every PHI read, who made it and how it ended."""
    where = AuditFilter(user=user, action=action, result=result, request_id=request_id, since=since, limit=limit)
    return [AuditOut(**r.data()) for r in read_audit(portal.platform.log, where)]
