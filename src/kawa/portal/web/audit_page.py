"""The audit page (admins, ``audit.read``): who did what, filterable, with the last day drawn per hour.

It reads the same trail as ``GET /api/audit`` and ``kawa audit``: every mutating request, every PHI read and every
sign-on, with who, project, action, resource, result, status and request id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from kawa.audit.record import RESULTS, AuditRecord
from kawa.audit.trail import AuditFilter, read_audit
from kawa.portal.auth import Principal, get_portal, page_user
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.web.pages import render

router = APIRouter(include_in_schema=False)

HOURS = 24
CHART_W, CHART_H = 720, 120
LIMIT = 500  # rows shown, newest first (the API and `kawa audit` read any number)


@dataclass(frozen=True)
class HourBar:
    """One hour of the chart: its start, the records by result, and each result's segment (y, height) in px."""

    start: datetime
    counts: dict[str, int]
    segments: tuple[tuple[str, float, float], ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def hourly(records: Sequence[AuditRecord], now: datetime, hours: int = HOURS,
           height: float = CHART_H) -> list[HourBar]:  # fmt: skip
    """The last ``hours`` whole hours up to ``now``, oldest first: each hour's records by result, stacked as bars
    scaled so the busiest hour fills ``height`` (pure)."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    starts = [end - timedelta(hours=hours - i) for i in range(hours)]
    counts = [dict.fromkeys(RESULTS, 0) for _ in starts]
    for r in records:
        index = math.floor((r.time - starts[0]).total_seconds() / 3600)
        if 0 <= index < hours:
            counts[index][r.result] += 1
    busiest = max((sum(c.values()) for c in counts), default=0) or 1
    bars = []
    for start, c in zip(starts, counts, strict=True):
        y, segments = height, []
        for result in RESULTS:
            h = height * c[result] / busiest
            if h > 0:
                y -= h
                segments.append((result, round(y, 2), round(h, 2)))
        bars.append(HourBar(start, c, tuple(segments)))
    return bars


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    user: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    result: Annotated[str | None, Query(max_length=16)] = None,
    project: Annotated[str | None, Query(max_length=64)] = None,
    principal: Principal = Depends(page_user(Action.AUDIT_READ)),
    portal: Portal = Depends(get_portal),
) -> HTMLResponse:
    chosen = {k: v or None for k, v in {"user": user, "action": action, "result": result, "project": project}.items()}
    if chosen["result"] not in (None, *RESULTS):
        chosen["result"] = None
    where = AuditFilter(user=chosen["user"], action=chosen["action"], result=chosen["result"],
                        project=chosen["project"])  # fmt: skip
    records = read_audit(portal.platform.log, where)
    now = datetime.now(UTC)
    bars = hourly(records, now)
    rows = list(reversed(records[-LIMIT:]))
    return render(request, "audit.html", principal, rows=rows, shown=len(rows), matched=len(records), bars=bars,
                  chosen=chosen, results=RESULTS, chart_w=CHART_W, chart_h=CHART_H,
                  bar_w=CHART_W / HOURS)  # fmt: skip
