"""Dead letters: topics that hold them, each record's reason, re-drive to the source topic."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from kawa.errors import KawaError
from kawa.portal.api.common import ERRORS, Section
from kawa.portal.auth import Principal, get_portal, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.sources.deadletters import DeadLettersSource

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


@router.get("", response_model=Section[DeadLetterTopicOut])
def list_topics(
    _: Principal = Depends(require(Action.DEADLETTERS_READ)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    return {
        "items": [
            DeadLetterTopicOut(topic=t.topic, source_topic=t.source_topic, records=t.records, owners=list(t.owners))
            for t in _source(portal).topics()
        ]
    }


@router.get("/{topic}/records", response_model=list[DeadLetterOut])
def list_records(
    topic: TOPIC,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    principal: Principal = Depends(require(Action.DEADLETTERS_READ)),
    portal: Portal = Depends(get_portal),
) -> list[DeadLetterOut]:
    """The newest dead letters with their reasons. The original event's subject and data only with phi.read."""
    source = _source(portal)
    if not source.is_dead_letter_topic(topic):
        raise KawaError(f"{topic!r} is not a dead-letter topic; GET /api/deadletters lists them")
    phi = principal.can(Action.PHI_READ)
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
    _: Principal = Depends(require(Action.DEADLETTERS_REDRIVE)),
    portal: Portal = Depends(get_portal),
) -> RedriveOut:
    """Send one dead letter back to its source topic as a new event (same data, new id)."""
    source = _source(portal)
    if not source.is_dead_letter_topic(topic):
        raise KawaError(f"{topic!r} is not a dead-letter topic; GET /api/deadletters lists them")
    meta = source.redrive(topic, body.partition, body.offset, body.target)
    return RedriveOut(topic=meta.topic, partition=meta.partition, offset=meta.offset)
