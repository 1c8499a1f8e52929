"""Projects: the ones the caller may view, with each quota beside what the project's jobs hold now."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from kawa.portal.api.common import ERRORS
from kawa.portal.auth import Principal, get_portal, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.sources.projects import ProjectView

router = APIRouter(prefix="/api/projects", tags=["projects"], responses=ERRORS)

NAME = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9-]*$")]


class QuotaLineOut(BaseModel):
    field: str
    limit: float | None = Field(description="null: no limit")
    use: float | None = Field(description="what the project's active jobs hold; null: not measured")
    enforced: bool = Field(
        description="whether Kawa enforces this quota (the job scheduler's four fields; function replicas per host)"
    )


class ProjectOut(BaseModel):
    name: str
    template: str
    namespace: str = Field(description="its Kubernetes namespace (`kawa projects render`)")
    members: int
    role: str | None = Field(description="your role in it; null for a platform admin who is no member")
    quota: list[QuotaLineOut]


def project_out(view: ProjectView) -> ProjectOut:
    data = asdict(view)
    return ProjectOut(**{**data, "quota": [QuotaLineOut(**line) for line in data["quota"]]})


@router.get("", response_model=list[ProjectOut])
def list_projects(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> list[ProjectOut]:
    """The projects you may view (members see theirs and `default`; platform admins see all)."""
    return [project_out(v) for v in portal.projects.visible(principal.user)]


@router.get("/{name}", response_model=ProjectOut)
def get_project(
    name: NAME, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> ProjectOut:
    return project_out(portal.projects.one(principal.user, name))
