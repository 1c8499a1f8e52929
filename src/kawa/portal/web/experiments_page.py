"""The experiments page: every experiment, and for the one chosen its split of units per arm against the plan
(a chart), the sample-ratio check, versions and a stop button for roles with ``experiments.manage``; and its
evidence from the evaluations topic: per challenger the always-valid interval over looks against the zero line
(the decision boundary), n per arm, the SRM p-value and guardrails per look, and the decision record with a link
to download its JSON."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from kawa.errors import KawaError, PermissionDenied
from kawa.portal.api.experiments import (
    LookOut,
    experiment_out,
    look_out,
    looks_out,
    may_on_experiment,
    status_out,
    visible_experiments,
)
from kawa.portal.auth import Principal, get_portal, page_user
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.web.interval_chart import interval_charts, srm_chart
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
    experiments = [experiment_out(s) for s in visible_experiments(portal, principal)]
    selected = request.query_params.get("experiment") or (experiments[0].name if experiments else None)
    status, bars, error = None, [], None
    looks, charts, srm, record, record_looks = None, [], None, None, []
    if selected:
        try:
            may_on_experiment(principal, portal, selected, Action.VIEW)
            raw = portal.experiments.status(selected)
            status, bars = status_out(raw), allocation_bars(raw)
            evaluation = portal.experiments.evaluation(selected)
            looks = looks_out(raw.state, evaluation)
            charts = interval_charts(looks.looks, looks.control, looks.challengers)
            srm = srm_chart(looks.looks, looks.srm_alpha)
            record = evaluation.record
            record_looks = _record_looks(record)
        except KawaError as exc:
            error = str(exc)
    return render(request, "experiments.html", principal, experiments=experiments, selected=selected,
                  status=status, bars=bars, bar_w=BAR_W, error=error, looks=looks, charts=charts, srm=srm,
                  record=record, record_looks=record_looks, record_versions=_versions(record, status),
                  guardrail_names=_guardrail_names(looks))  # fmt: skip


def _record_looks(record: dict[str, Any] | None) -> list[LookOut]:
    """The looks as the decision record holds them (not as the look events do), the deciding one marked."""
    if record is None:
        return []
    decision = record.get("decision")
    at = decision.get("look") if isinstance(decision, dict) else None
    return [look_out({**lk, "decision": decision if lk.get("index") == at else None}) for lk in record["looks"]]


def _versions(record: dict[str, Any] | None, status: Any) -> list[tuple[str, str]]:
    """The record's versions per arm, in the spec's arm order (the record's JSON sorts its keys)."""
    versions = dict(record.get("versions") or {}) if record else {}
    order = [a.arm for a in status.arms] if status is not None else []
    return [(a, str(versions.pop(a))) for a in order if a in versions] + sorted(versions.items())


def _guardrail_names(looks: Any) -> list[str]:
    names: dict[str, None] = {}
    for lk in looks.looks if looks is not None else ():
        names.update(dict.fromkeys(lk.guardrails))
    return list(names)


@router.post("/experiments/{name}/stop")
def stop_form(
    name: str,
    reason: str = Form("stopped from the portal", min_length=1, max_length=500),
    principal: Principal = Depends(page_user()),
    portal: Portal = Depends(get_portal),
) -> Response:
    try:
        may_on_experiment(principal, portal, name, Action.EXPERIMENTS_MANAGE)
    except PermissionDenied:
        raise
    except KawaError as exc:
        return back("/experiments", error=str(exc))
    try:
        state = portal.experiments.stop(name, reason)
    except KawaError as exc:
        return back("/experiments", error=str(exc))
    return back("/experiments", flash=f"experiment {state.name} stopped: {state.reason}")
