"""The monitoring page, per model and version: a feature-by-time drift heat map, the live score distribution
against the reference, matured performance over time with interval bands and the label-free estimate in the gap,
the outcome backlog and the alert history — for a data scientist, without reading code."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from kawa.portal.auth import Principal, get_portal, may, page_user
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.web.monitor_charts import heatmap, performance_series, score_bars
from kawa.portal.web.pages import render

router = APIRouter(include_in_schema=False)
HEATMAP_WINDOWS = 48


@router.get("/monitoring", response_class=HTMLResponse)
def monitoring_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    from kawa.monitor.status import PERFORMANCE_EVENT, WINDOW_EVENT, status

    models = portal.projects.viewable(principal.user, "model", portal.monitoring.models())
    selected = request.query_params.get("model") or (models[0] if models else None)
    context: dict[str, Any] = {"models": models, "selected": selected, "versions": []}
    if selected:
        may(principal, portal, "model", selected, Action.VIEW)
        events = portal.monitoring.of(selected)
        model_status = status(events, selected)
        versions = []
        for version, v in sorted(model_status.versions.items(), reverse=True):
            windows = [e for e in events if e.type == WINDOW_EVENT and e.version == version][-HEATMAP_WINDOWS:]
            features = sorted({name for w in windows for name in w.data.get("drift", {})})
            perf = [e for e in events if e.type == PERFORMANCE_EVENT and e.version == version]
            versions.append({
                "version": version, "status": v.to_dict(), "heatmap": heatmap(windows, features),
                "score": score_bars(v.last_window), "performance": performance_series(perf),
                "label_free": (v.performance.data.get("label_free") if v.performance else None),
                "alerts": list(reversed(v.alerts))[:20],
            })  # fmt: skip
        context["versions"] = versions
    return render(request, "monitoring.html", principal, **context)
