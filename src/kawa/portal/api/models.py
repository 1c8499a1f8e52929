"""Registered models: versions with metrics and lineage, aliases; promote and roll back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kawa.portal.api.common import ERRORS, Section, not_configured
from kawa.portal.auth import Principal, get_portal, may, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal

router = APIRouter(prefix="/api/models", tags=["models"], responses=ERRORS)

MODEL = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"


class ModelOut(BaseModel):
    name: str
    latest_version: int | None
    aliases: dict[str, int]


class VersionOut(BaseModel):
    name: str
    version: int
    aliases: list[str]
    run_id: str | None
    created_ms: int
    metrics: dict[str, float]
    lineage: dict[str, str]


class PromoteIn(BaseModel):
    version: int = Field(ge=1, le=10**9)
    alias: str = Field("champion", pattern=ALIAS_PATTERN)


class RollbackIn(BaseModel):
    alias: str = Field("champion", pattern=ALIAS_PATTERN)


class AliasMoveOut(BaseModel):
    model: str
    alias: str
    version: int
    previous_version: int | None
    action: str


def _move_out(move: Any) -> AliasMoveOut:
    return AliasMoveOut(
        model=move.model, alias=move.alias, version=move.version, previous_version=move.previous, action=move.action
    )


@router.get("", response_model=Section[ModelOut])
async def list_models(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """Every registered model you may view (another project's, ``project.name``, are left out)."""
    ok, reason = portal.models.available()
    if not ok:
        return not_configured(reason)
    models = await run_in_threadpool(portal.models.models)
    keep = set(portal.projects.viewable(principal.user, "model", [m.name for m in models]))
    models = [m for m in models if m.name in keep]
    return {"items": [ModelOut(name=m.name, latest_version=m.latest_version, aliases=dict(m.aliases)) for m in models]}


@router.get("/{name}/versions", response_model=list[VersionOut])
async def list_versions(
    name: MODEL, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> list[VersionOut]:
    may(principal, portal, "model", name, Action.VIEW)
    versions = await run_in_threadpool(portal.models.versions, name)
    return [
        VersionOut(
            name=v.name,
            version=v.version,
            aliases=list(v.aliases),
            run_id=v.run_id,
            created_ms=v.created_ms,
            metrics=dict(v.metrics),
            lineage=dict(v.lineage),
        )
        for v in versions
    ]


@router.post("/{name}/promote", response_model=AliasMoveOut)
async def promote(
    name: MODEL,
    body: PromoteIn,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> AliasMoveOut:
    """Point ``alias`` at ``version`` (``models.promote`` in the model's project); functions and servers follow."""
    may(principal, portal, "model", name, Action.MODELS_PROMOTE)
    return _move_out(await run_in_threadpool(portal.models.promote, name, body.version, body.alias))


@router.post("/{name}/rollback", response_model=AliasMoveOut)
async def rollback(
    name: MODEL,
    body: RollbackIn,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> AliasMoveOut:
    """Move ``alias`` back to the version it pointed to before its last move (``models.promote`` there)."""
    may(principal, portal, "model", name, Action.MODELS_PROMOTE)
    return _move_out(await run_in_threadpool(portal.models.rollback, name, body.alias))
