"""Experiments: list, status per arm (units, predictions, versions, the sample-ratio check), create and stop; the
evidence from the evaluations topic — every always-valid look (``/looks``) and the decision record (``/record``,
a JSON download anyone can recompute with ``kawa.evaluation.decision.recompute``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kawa.portal.api.common import ERRORS
from kawa.portal.auth import Principal, get_portal, may, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal

router = APIRouter(prefix="/api/experiments", tags=["experiments"], responses=ERRORS)

NAME = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]


class ArmOut(BaseModel):
    name: str
    weight: float
    model: str | None
    policy: str | None
    holdout: bool


class ExperimentOut(BaseModel):
    name: str
    model: str
    status: str
    shadow: bool
    unit: str
    primary_metric: str
    arms: list[ArmOut]
    spec_hash: str
    created_ms: int
    stopped_ms: int | None
    reason: str
    spec: dict[str, Any] = Field(description="the full spec (kawa.evaluation.ExperimentSpec.to_dict)")


class ArmStatusOut(BaseModel):
    arm: str
    weight: float
    units: int
    predictions: int
    shadow_predictions: int
    versions: list[int]
    decisions: int = Field(0, description="decision records (ctx.decide) of the arm")


class StatusOut(BaseModel):
    experiment: ExperimentOut
    arms: list[ArmStatusOut]
    srm_p_value: float | None = Field(description="always-valid p-value that units split as planned")
    sample_ratio_mismatch: bool
    foreign: int = Field(description="records naming the experiment under another spec (an earlier run)")
    notes: list[str]


class ComparisonOut(BaseModel):
    arm: str = Field(description="the challenger, compared with the control (challenger - control)")
    estimate: float | None
    lower: float | None = Field(description="always-valid lower bound; null while unbounded (-inf)")
    upper: float | None = Field(description="always-valid upper bound; null while unbounded (+inf)")
    e_value: float | None
    p_value: float | None = Field(description="always-valid p-value (running minimum over looks)")


class DecisionOut(BaseModel):
    kind: str = Field(description="continue, stop-efficacy, stop-futility, guardrail-breach or srm")
    look: int
    arm: str | None
    reason: str


class LookOut(BaseModel):
    index: int
    window: list[float | None] = Field(description="the data window [start, end], epoch seconds")
    n: dict[str, int] = Field(description="matured units per arm")
    comparisons: list[ComparisonOut]
    srm_p_value: float | None = Field(description="always-valid sample-ratio p-value (running minimum)")
    guardrails: dict[str, dict[str, float | None]]
    decision: DecisionOut | None = Field(description="the decision this look made (null: continue)")


class LooksOut(BaseModel):
    experiment: str
    spec_hash: str
    control: str
    challengers: list[str]
    alpha: float
    srm_alpha: float
    looks: list[LookOut]
    decision: DecisionOut | None = Field(description="the experiment's decision, from its decision record")
    foreign: int = Field(description="evaluation events naming the experiment under another spec (not shown)")


class ExperimentIn(BaseModel):
    spec: dict[str, Any] = Field(description="an experiment spec: name, model, arms, unit, salt, primary_metric, …")
    shadow: bool = False


class StopIn(BaseModel):
    reason: str = Field("stopped from the portal", min_length=1, max_length=500)


def experiment_out(state: Any) -> ExperimentOut:
    spec = state.spec
    return ExperimentOut(
        name=spec.name, model=spec.model, status=state.status, shadow=state.shadow, unit=spec.unit,
        primary_metric=spec.primary_metric,
        arms=[ArmOut(name=a.name, weight=a.weight, model=a.model, policy=a.policy, holdout=a.holdout)
              for a in spec.arms],
        spec_hash=spec.spec_hash(), created_ms=state.created_ms, stopped_ms=state.stopped_ms, reason=state.reason,
        spec=spec.to_dict(),
    )  # fmt: skip


def status_out(status: Any) -> StatusOut:
    return StatusOut(
        experiment=experiment_out(status.state),
        arms=[ArmStatusOut(arm=a.arm, weight=a.weight, units=a.units, predictions=a.predictions,
                           shadow_predictions=a.shadow_predictions, versions=list(a.versions),
                           decisions=a.decisions) for a in status.arms],
        srm_p_value=status.srm_p_value, sample_ratio_mismatch=status.sample_ratio_mismatch,
        foreign=status.foreign, notes=list(status.notes),
    )  # fmt: skip


def _num(v: Any) -> float | None:
    """A strict-JSON number of a look ("inf", "-inf", "nan" as the records write them) as a float or None."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def decision_out(d: Any) -> DecisionOut | None:
    if not isinstance(d, dict):
        return None
    return DecisionOut(kind=str(d["kind"]), look=int(d["look"]), arm=d.get("arm"), reason=str(d.get("reason", "")))


def look_out(lk: dict[str, Any]) -> LookOut:
    return LookOut(
        index=int(lk["index"]), window=[_num(t) for t in lk.get("window", [])],
        n={a: int(k) for a, k in lk.get("n", {}).items()},
        comparisons=[ComparisonOut(arm=c["arm"], estimate=_num(c.get("estimate")), lower=_num(c.get("lower")),
                                   upper=_num(c.get("upper")), e_value=_num(c.get("e_value")),
                                   p_value=_num(c.get("p_value"))) for c in lk.get("comparisons", [])],
        srm_p_value=_num(lk.get("srm_p_value")),
        guardrails={g: {a: _num(x) for a, x in v.items()} for g, v in lk.get("guardrails", {}).items()},
        decision=decision_out(lk.get("decision")),
    )  # fmt: skip


def looks_out(state: Any, evaluation: Any) -> LooksOut:
    spec = state.spec
    record = evaluation.record
    return LooksOut(
        experiment=spec.name, spec_hash=spec.spec_hash(), control=spec.control, challengers=list(spec.challengers),
        alpha=spec.alpha, srm_alpha=spec.srm_alpha, looks=[look_out(lk) for lk in evaluation.looks],
        decision=decision_out(record.get("decision")) if record else None, foreign=evaluation.foreign,
    )  # fmt: skip


def visible_experiments(portal: Portal, principal: Principal) -> list[Any]:
    """The experiments ``principal`` may view: those on models of projects they may view (``P.model``)."""
    states = portal.experiments.list()
    keep = set(portal.projects.viewable(principal.user, "model", [s.spec.model for s in states]))
    return [s for s in states if s.spec.model in keep]


def may_on_experiment(principal: Principal, portal: Portal, name: str, action: Action) -> None:
    """``action`` on experiment ``name`` with the user's role in its model's project (see ``may``)."""
    may(principal, portal, "model", portal.experiments.store.get(name).spec.model, action)


@router.get("", response_model=list[ExperimentOut])
def list_experiments(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> list[ExperimentOut]:
    return [experiment_out(s) for s in visible_experiments(portal, principal)]


@router.get("/{name}", response_model=StatusOut)
def experiment_status(
    name: NAME, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> StatusOut:
    may_on_experiment(principal, portal, name, Action.VIEW)
    return status_out(portal.experiments.status(name))


@router.get("/{name}/looks", response_model=LooksOut)
def experiment_looks(
    name: NAME, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> LooksOut:
    """Every always-valid look of the experiment under its current spec, in order, and its decision if made."""
    may_on_experiment(principal, portal, name, Action.VIEW)
    evaluation = portal.experiments.evaluation(name)
    return looks_out(portal.experiments.store.get(name), evaluation)


@router.get(
    "/{name}/record",
    response_model=dict[str, Any],
    responses={200: {"description": "the decision record (kawa.evaluation.decision.DecisionRecord.to_json)"}},
)
def experiment_record(
    name: NAME, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> JSONResponse:
    """The decision record as a JSON download: spec and hash, window, versions, every look, the decision and the
    rule version. 404 until the experiment is decided."""
    may_on_experiment(principal, portal, name, Action.VIEW)
    record = portal.experiments.evaluation(name).record
    if record is None:
        return JSONResponse({"detail": f"experiment {name!r} has no decision yet; its looks are at "
                             f"/api/experiments/{name}/looks", "error": "NoDecision"}, status_code=404)  # fmt: skip
    return JSONResponse(record, headers={"Content-Disposition": f'attachment; filename="{name}-decision-record.json"'})


@router.post("", response_model=ExperimentOut, status_code=201)
def create_experiment(
    body: ExperimentIn,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> ExperimentOut:
    """Create an experiment (``experiments.manage`` in its model's project)."""
    model = body.spec.get("model")
    may(principal, portal, "model", model if isinstance(model, str) else "", Action.EXPERIMENTS_MANAGE)
    return experiment_out(portal.experiments.create(body.spec, shadow=body.shadow))


@router.post("/{name}/stop", response_model=ExperimentOut)
def stop_experiment(
    name: NAME,
    body: StopIn,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> ExperimentOut:
    may_on_experiment(principal, portal, name, Action.EXPERIMENTS_MANAGE)
    return experiment_out(portal.experiments.stop(name, body.reason))
