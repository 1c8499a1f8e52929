"""Monitoring: the models the monitoring service watches, and per model its status per version (open alerts,
alert history, the last window's drift table, the latest matured performance) and the drift of every window."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from kawa.portal.api.common import ERRORS
from kawa.portal.auth import Principal, get_portal, may, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal

router = APIRouter(prefix="/api/monitoring", tags=["monitoring"], responses=ERRORS)

MODEL = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]


@router.get("", response_model=list[str])
def monitored_models(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> list[str]:
    """The monitored models you may view (a model ``P.x`` is project P's)."""
    return portal.projects.viewable(principal.user, "model", portal.monitoring.models())


@router.get("/{model}")
def model_monitoring(
    model: MODEL, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """``status`` as `kawa monitor status --json`; ``windows``: per version, each tested window's drift (PSI per
    feature and for the score); ``performance``: every matured cohort's metrics with intervals."""
    from kawa.monitor.status import PERFORMANCE_EVENT, WINDOW_EVENT, status

    may(principal, portal, "model", model, Action.VIEW)

    events = portal.monitoring.of(model)
    windows: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        if e.type == WINDOW_EVENT:
            windows.setdefault(e.version, []).append({
                "window": e.data.get("window"), "n": e.data.get("n"),
                "psi": {name: row.get("psi") for name, row in e.data.get("drift", {}).items()},
            })  # fmt: skip
    performance = [dict(e.data) for e in events if e.type == PERFORMANCE_EVENT]
    return {"status": status(events, model).to_dict(), "windows": {str(v): w for v, w in windows.items()},
            "performance": performance}  # fmt: skip
