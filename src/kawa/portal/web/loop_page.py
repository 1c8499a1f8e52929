"""The loop page: per model, a timeline of its candidates — trigger → training (with progress) → offline gate →
canary → evaluation → decision — each node opening its evidence; refused triggers below."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from kawa.portal.api.loop import timeline_out
from kawa.portal.auth import Principal, get_portal, may, page_user
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.web.pages import render, templates

router = APIRouter(include_in_schema=False)
templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
templates.env.filters["clock"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "—"


@router.get("/loop", response_class=HTMLResponse)
def loop_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    models = portal.projects.viewable(principal.user, "model", portal.loop.models())
    selected = request.query_params.get("model") or (models[0] if models else None)
    if selected:
        may(principal, portal, "model", selected, Action.VIEW)
    timeline = timeline_out(portal, selected) if selected else None
    return render(request, "loop.html", principal, models=models, selected=selected, timeline=timeline)
