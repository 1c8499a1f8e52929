"""Experiments: list, status per arm (units, predictions, versions, the sample-ratio check), create and stop."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from kawa.portal.api.common import ERRORS
from kawa.portal.auth import Principal, get_portal, require
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


class StatusOut(BaseModel):
    experiment: ExperimentOut
    arms: list[ArmStatusOut]
    srm_p_value: float | None = Field(description="always-valid p-value that units split as planned")
    sample_ratio_mismatch: bool
    foreign: int = Field(description="records naming the experiment under another spec (an earlier run)")
    notes: list[str]


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
                           shadow_predictions=a.shadow_predictions, versions=list(a.versions)) for a in status.arms],
        srm_p_value=status.srm_p_value, sample_ratio_mismatch=status.sample_ratio_mismatch,
        foreign=status.foreign, notes=list(status.notes),
    )  # fmt: skip


@router.get("", response_model=list[ExperimentOut])
def list_experiments(
    _: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> list[ExperimentOut]:
    return [experiment_out(s) for s in portal.experiments.list()]


@router.get("/{name}", response_model=StatusOut)
def experiment_status(
    name: NAME, _: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> StatusOut:
    return status_out(portal.experiments.status(name))


@router.post("", response_model=ExperimentOut, status_code=201)
def create_experiment(
    body: ExperimentIn,
    _: Principal = Depends(require(Action.EXPERIMENTS_MANAGE)),
    portal: Portal = Depends(get_portal),
) -> ExperimentOut:
    return experiment_out(portal.experiments.create(body.spec, shadow=body.shadow))


@router.post("/{name}/stop", response_model=ExperimentOut)
def stop_experiment(
    name: NAME,
    body: StopIn,
    _: Principal = Depends(require(Action.EXPERIMENTS_MANAGE)),
    portal: Portal = Depends(get_portal),
) -> ExperimentOut:
    return experiment_out(portal.experiments.stop(name, body.reason))
