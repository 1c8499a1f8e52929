"""Topics: partitions, sizes, write rates, consumer lag of the groups the platform knows; reading records."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from kawa.errors import KawaError
from kawa.log.base import TopicInfo, TopicSpec
from kawa.portal.api.common import ERRORS, Section
from kawa.portal.auth import Principal, get_portal, may, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.sources.log import total_records, written_records

router = APIRouter(prefix="/api/topics", tags=["topics"], responses=ERRORS)

TOPIC = Annotated[str, Path(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")]


class PartitionOut(BaseModel):
    partition: int
    start_offset: int
    end_offset: int


class ConsumerLagOut(BaseModel):
    group: str
    lag: int
    owner: str = Field(description="the function or route reading with this group")


class TopicOut(BaseModel):
    name: str
    partitions: list[PartitionOut]
    records: int = Field(description="records held now (end - start offsets)")
    written: int = Field(description="records ever written (sum of end offsets)")
    rate_per_s: float = Field(description="write rate over the last seconds")
    retention_ms: int | None
    cleanup_policy: str
    consumers: list[ConsumerLagOut] = []


class TopicIn(BaseModel):
    name: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(1, ge=1, le=1024)


class RecordOut(BaseModel):
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    headers: dict[str, str]
    value: str | None = Field(description="UTF-8 text (undecodable bytes replaced)")


def consumers_of(portal: Portal) -> dict[str, list[tuple[str, str]]]:
    """Topic → [(group, owner)] for the functions and routes running here."""
    out: dict[str, list[tuple[str, str]]] = {}
    for spec in portal.functions.specs():
        out.setdefault(spec.topic, []).append((spec.group, spec.qualified_name))
    try:
        routes = portal.routes.routes()
    except KawaError:
        routes = []
    for route in routes:
        if route.source.startswith("topic:"):
            topic, _, query = route.source[len("topic:") :].partition("?")
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            out.setdefault(topic, []).append((params.get("group", f"route.{route.id}"), f"route {route.id}"))
    return out


def topic_out(portal: Portal, info: TopicInfo, consumers: dict[str, list[tuple[str, str]]]) -> TopicOut:
    lags = []
    for group, owner in consumers.get(info.name, []):
        rows = portal.log.lag(group, [info.name])
        lags.append(ConsumerLagOut(group=group, lag=sum(r.lag for r in rows), owner=owner))
    return TopicOut(
        name=info.name,
        partitions=[
            PartitionOut(partition=p.partition, start_offset=p.start_offset, end_offset=p.end_offset)
            for p in info.partitions
        ],
        records=total_records(info),
        written=written_records(info),
        rate_per_s=round(portal.log.rates.rate(info.name), 3),
        retention_ms=info.retention_ms,
        cleanup_policy=info.cleanup_policy,
        consumers=lags,
    )


@router.get("", response_model=Section[TopicOut])
def list_topics(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """Every topic you may view (another project's are left out)."""
    consumers = consumers_of(portal)
    return {"items": [topic_out(portal, info, consumers) for info in viewable_topics(portal, principal)]}


def viewable_topics(portal: Portal, principal: Principal) -> list[TopicInfo]:
    infos = portal.log.topics()
    keep = set(portal.projects.viewable(principal.user, "topic", [i.name for i in infos]))
    return [i for i in infos if i.name in keep]


@router.post("", response_model=TopicOut, status_code=201)
def create_topic(
    body: TopicIn, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> TopicOut:
    """Create a topic (``topics.write`` in the project its name's prefix names, else globally)."""
    may(principal, portal, "topic", body.name, Action.TOPICS_WRITE)
    portal.log.log.create_topic(TopicSpec(body.name, partitions=body.partitions))
    return topic_out(portal, portal.log.describe(body.name), consumers_of(portal))


@router.get("/{name}", response_model=TopicOut)
def get_topic(
    name: TOPIC, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> TopicOut:
    may(principal, portal, "topic", name, Action.VIEW)
    return topic_out(portal, portal.log.describe(name), consumers_of(portal))


@router.get("/{name}/records", response_model=list[RecordOut])
def read_records(
    name: TOPIC,
    partition: Annotated[int | None, Query(ge=0, le=1023)] = None,
    offset: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> list[RecordOut]:
    """Raw records (newest first, or from ``offset`` of ``partition``). Records may carry PHI: ``phi.read`` (in
    the topic's project, or globally)."""
    may(principal, portal, "topic", name, Action.PHI_READ)
    records = portal.log.read(name, limit=limit, partition=partition, offset=offset)
    return [
        RecordOut(
            partition=r.partition,
            offset=r.offset,
            timestamp_ms=r.timestamp_ms,
            key=None if r.key is None else r.key.decode("utf-8", "replace"),
            headers={k: v.decode("utf-8", "replace") for k, v in r.headers},
            value=None if r.value is None else r.value[:65536].decode("utf-8", "replace"),
        )
        for r in records
    ]
