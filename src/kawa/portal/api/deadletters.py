"""Dead letters: topics that hold them, each record's reason, re-drive to the source topic."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from kawa.errors import KawaError
from kawa.portal.api.common import ERRORS, Section
from kawa.portal.auth import Principal, get_portal, may, may_in, require, require_on
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.sources.deadletters import DeadLettersSource, DeadLetterTopic

router = APIRouter(prefix="/api/deadletters", tags=["dead letters"], responses=ERRORS)

TOPIC = Annotated[str, Path(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")]


class DeadLetterTopicOut(BaseModel):
    topic: str
    source_topic: str | None
    records: int
    owners: list[str]


class DeadLetterOut(BaseModel):
    topic: str
    partition: int
    offset: int
    time: float | None
    error_type: str | None
    error_message: str | None
    attempts: int | None
    function: str | None
    event_id: str | None
    event_type: str | None
    reason: dict[str, Any] | None = Field(None, description="the dead-letter reason (kawa.deadletter schema)")
    event_subject: str | None = Field(None, description="phi.read only (object keys may name patients)")
    data: Any = Field(None, description="the original event's data; phi.read only")


class RedriveIn(BaseModel):
    partition: int = Field(ge=0, le=1023)
    offset: int = Field(ge=0)
    target: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="default: the topic the dead letter came from",
    )


class RedriveOut(BaseModel):
    topic: str
    partition: int
    offset: int


def _source(portal: Portal) -> DeadLettersSource:
    return DeadLettersSource(portal)


def visible_topics(principal: Principal, portal: Portal) -> list[DeadLetterTopic]:
    """The dead-letter topics ``principal`` may read: those of ``default`` with the global role, a registered
    project's (``P.x.dlq``) with the role there. :class:`~kawa.errors.PermissionDenied` when the user may read
    dead letters nowhere (as before projects: the global role says so)."""
    allowed: dict[str | None, bool] = {None: principal.can(Action.DEADLETTERS_READ)}
    out = []
    for t in _source(portal).topics():
        owner = portal.projects.owner("topic", t.topic)
        if owner is not None and owner not in allowed:
            allowed[owner] = portal.projects.allows(principal.user, owner, Action.DEADLETTERS_READ)
        if allowed[owner]:
            out.append(t)
    if not any(allowed.values()):
        may_in(principal, portal, None, Action.DEADLETTERS_READ, "dead letters")  # raises, naming the role
    principal.notes.action = Action.DEADLETTERS_READ.value
    return out


@router.get("", response_model=Section[DeadLetterTopicOut])
def list_topics(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """The dead-letter topics you may read (a project's with your role there)."""
    return {
        "items": [
            DeadLetterTopicOut(topic=t.topic, source_topic=t.source_topic, records=t.records, owners=list(t.owners))
            for t in visible_topics(principal, portal)
        ]
    }


@router.get("/{topic}/records", response_model=list[DeadLetterOut])
def list_records(
    topic: TOPIC,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    principal: Principal = Depends(require_on("topic", "topic", Action.DEADLETTERS_READ)),
    portal: Portal = Depends(get_portal),
) -> list[DeadLetterOut]:
    """The newest dead letters with their reasons. The original event's subject and data only with phi.read
    (a project's dead letters: with the role there)."""
    source = _source(portal)
    if not source.is_dead_letter_topic(topic):
        raise KawaError(f"{topic!r} is not a dead-letter topic; GET /api/deadletters lists them")
    owner = portal.projects.owner("topic", topic)
    phi = (principal.can(Action.PHI_READ) if owner is None
           else portal.projects.allows(principal.user, owner, Action.PHI_READ))  # fmt: skip
    principal.notes.phi_read = phi  # the payloads are PHI: audited
    out = []
    for letter in source.records(topic, limit):
        row = DeadLetterOut(**letter.summary())
        if phi:
            row.event_subject, row.data = letter.event_subject, letter.data
        out.append(row)
    return out


@router.post("/{topic}/redrive", response_model=RedriveOut)
def redrive(
    topic: TOPIC,
    body: RedriveIn,
    principal: Principal = Depends(require_on("topic", "topic", Action.DEADLETTERS_REDRIVE)),
    portal: Portal = Depends(get_portal),
) -> RedriveOut:
    """Send one dead letter back to its source topic as a new event (same data, new id). A project's dead
    letters with the role there; a ``target`` of another project needs the redrive right there too."""
    source = _source(portal)
    if body.target:
        may(principal, portal, "topic", body.target, Action.DEADLETTERS_REDRIVE)
    if not source.is_dead_letter_topic(topic):
        raise KawaError(f"{topic!r} is not a dead-letter topic; GET /api/deadletters lists them")
    meta = source.redrive(topic, body.partition, body.offset, body.target)
    return RedriveOut(topic=meta.topic, partition=meta.partition, offset=meta.offset)
