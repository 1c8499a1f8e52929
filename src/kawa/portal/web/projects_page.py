"""The projects page: each project the user may view, its quota drawn as bars of use against limit."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from kawa.portal.auth import Principal, get_portal, page_user
from kawa.portal.runtime import Portal
from kawa.portal.web.pages import render

router = APIRouter(include_in_schema=False)


def bar_percent(use: float | None, limit: float | None) -> int | None:
    """How full a quota is, 0 to 100 (None when it has no limit or no measured use); a zero limit in use is full."""
    if use is None or limit is None:
        return None
    if limit <= 0:
        return 100 if use > 0 else 0
    return max(0, min(100, round(100 * use / limit)))


def amount(field: str, value: float | None) -> str:
    """A quota value for people: bytes in GiB, memory in MiB, counts as counts; None is no limit."""
    if value is None:
        return "no limit"
    if field == "storage_bytes":
        return f"{value / 1024**3:,.3g} GiB"
    if field == "memory_mb":
        return f"{value:,.0f} MiB"
    return f"{value:,.3g}"


@router.get("/projects", response_class=HTMLResponse)
def projects_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    projects = portal.projects.visible(principal.user)
    return render(request, "projects.html", principal, projects=projects, bar_percent=bar_percent, amount=amount)
