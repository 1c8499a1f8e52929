"""The retraining loop: the models with a loop, and each one's timeline (episodes of trigger, training, gates,
canary and decision, with their evidence)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from kawa.portal.api.common import ERRORS
from kawa.portal.auth import Principal, get_portal, may, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal

router = APIRouter(prefix="/api/loop", tags=["loop"], responses=ERRORS)

MODEL = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]


class NodeOut(BaseModel):
    kind: str
    at: float
    summary: str
    status: str
    evidence: dict[str, Any]


class EpisodeOut(BaseModel):
    job: str
    outcome: str
    version: int | None
    experiment: str | None
    nodes: list[NodeOut]
    progress: dict[str, Any] | None = Field(None, description="the training job's latest progress while it runs")


class TimelineOut(BaseModel):
    model: str
    episodes: list[EpisodeOut]
    skipped: list[NodeOut]


def timeline_out(portal: Portal, model: str) -> TimelineOut:
    t = portal.loop.timeline(model)
    episodes = []
    for e in t.episodes:
        running = e.outcome == "in flight" and e.nodes and e.nodes[-1].kind == "training"
        episodes.append(EpisodeOut(job=e.job, outcome=e.outcome, version=e.version, experiment=e.experiment,
                                   nodes=[NodeOut(**asdict(n)) for n in e.nodes],
                                   progress=portal.loop.progress(e.job) if running else None))  # fmt: skip
    return TimelineOut(model=model, episodes=episodes, skipped=[NodeOut(**asdict(n)) for n in t.skipped])


@router.get("", response_model=list[str])
def loop_models(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> list[str]:
    """The models with a loop timeline that you may view (a model ``P.x`` is project P's)."""
    return portal.projects.viewable(principal.user, "model", portal.loop.models())


@router.get("/{model}", response_model=TimelineOut)
def loop_timeline(
    model: MODEL, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> TimelineOut:
    may(principal, portal, "model", model, Action.VIEW)
    return timeline_out(portal, model)
