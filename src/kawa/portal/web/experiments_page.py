"""The experiments page: every experiment, and for the one chosen its split of units per arm against the plan
(a chart), the sample-ratio check, versions and a stop button for roles with ``experiments.manage``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from kawa.errors import KawaError
from kawa.portal.api.experiments import experiment_out, status_out
from kawa.portal.auth import Principal, get_portal, page_user
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.web.pages import back, render

router = APIRouter(include_in_schema=False)

BAR_W = 360  # px of a 100 % bar in the allocation chart


def allocation_bars(status: Any) -> list[dict[str, Any]]:
    """Per arm: planned and observed share of units, as bar widths for the page's SVG chart."""
    total = sum(a.units for a in status.arms)
    rows = []
    for i, a in enumerate(status.arms):
        share = a.units / total if total else 0.0
        rows.append({"arm": a.arm, "y": 10 + i * 46, "planned": a.weight, "observed": share,
                     "planned_w": round(a.weight * BAR_W, 1), "observed_w": round(share * BAR_W, 1)})
    return rows


@router.get("/experiments", response_class=HTMLResponse)
def experiments_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    experiments = [experiment_out(s) for s in portal.experiments.list()]
    selected = request.query_params.get("experiment") or (experiments[0].name if experiments else None)
    status, bars, error = None, [], None
    if selected:
        try:
            raw = portal.experiments.status(selected)
            status, bars = status_out(raw), allocation_bars(raw)
        except KawaError as exc:
            error = str(exc)
    return render(request, "experiments.html", principal, experiments=experiments, selected=selected,
                  status=status, bars=bars, bar_w=BAR_W, error=error)  # fmt: skip


@router.post("/experiments/{name}/stop")
def stop_form(
    name: str,
    reason: str = Form("stopped from the portal", min_length=1, max_length=500),
    principal: Principal = Depends(page_user(Action.EXPERIMENTS_MANAGE)),
    portal: Portal = Depends(get_portal),
) -> Response:
    try:
        state = portal.experiments.stop(name, reason)
    except KawaError as exc:
        return back("/experiments", error=str(exc))
    return back("/experiments", flash=f"experiment {state.name} stopped: {state.reason}")
