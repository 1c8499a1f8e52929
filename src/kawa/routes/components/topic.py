"""``topic:NAME`` — the event log (embedded or Kafka, whichever the platform uses).

Source options: ``group`` (consumer group, default ``route-<id>``), ``from`` (``earliest``|``latest`` for a
group with no commit), ``partitions`` (when the topic must be created). Progress = the group's committed
offsets. CloudEvents arrive as their data (JSON parsed) with attributes as ``ce-*`` headers; other records
arrive as bytes with id ``<topic>-<partition>-<offset>``.

Sink options: ``type`` (CloudEvent type, default the message's ``ce-type`` header or
``kawa.route.<id>``), ``partitions``. Records are CloudEvents in Kafka binary mode whose ``source`` is
``/kawa/routes/<id>`` and ``id`` the message id: a redelivered message carries the same identity, for
consumers to deduplicate. Keys: the message key.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import cast

from kawa.deadletter import plain_headers
from kawa.errors import CommitFailed, EventError
from kawa.events import from_record, is_cloudevent
from kawa.log.base import Consumer, Producer, Record, TopicPartition, TopicSpec
from kawa.routes.components.base import OrderedTracker, RouteContext, option
from kawa.routes.message import Message, Token, to_bytes
from kawa.routes.spec import EndpointSpec

_RESERVED = {"id", "source", "type", "specversion", "time", "subject", "datacontenttype", "dataschema", "data"}
_EXT = re.compile(r"[^a-z0-9]")


def topic_name(endpoint: EndpointSpec) -> str:
    name = endpoint.uri.split(":", 1)[1].lstrip("/")
    from kawa.log.base import validate_topic_name

    validate_topic_name(name)
    return name


def _is_json(content_type: str | None) -> bool:
    return bool(content_type) and ("json" in str(content_type).split(";")[0])


def record_message(record: Record, fallback_source: str) -> Message:
    """A log record as a message (CloudEvent data and attributes, or raw bytes)."""
    token = (record.partition, record.offset)
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    if is_cloudevent(record.headers):
        try:
            event = from_record(record)
        except EventError:
            event = None
        if event is not None:
            attrs = event.get_attributes()
            data = event.get_data()
            content_type = attrs.get("datacontenttype")
            if isinstance(data, bytes | bytearray) and _is_json(content_type):
                with contextlib.suppress(ValueError):  # else left as bytes: a JSON step rejects it
                    data = json.loads(data)
            headers = {f"ce-{k}": v for k, v in attrs.items() if k not in ("id", "source", "time", "specversion")}
            if content_type:
                headers["content-type"] = content_type
            time = attrs.get("time")
            return Message(
                body=data, id=str(attrs["id"]), source=str(attrs["source"]), headers=headers, key=key,
                time=time if isinstance(time, datetime) else None, tokens=(token,),
            )  # fmt: skip
    headers = {name: value.decode("utf-8", "replace") for name, value in record.headers}
    return Message(
        body=record.value or b"", id=f"{record.topic}-{record.partition}-{record.offset}", source=fallback_source,
        headers=headers, key=key, time=datetime.fromtimestamp(record.timestamp_ms / 1000, UTC), tokens=(token,),
    )  # fmt: skip


class TopicSource:
    exclusive = False

    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.topic = topic_name(endpoint)
        self.group = str(option(endpoint, "group", f"route-{ctx.route_id}"))
        self.reset = str(option(endpoint, "from", "earliest"))
        self.partitions = int(option(endpoint, "partitions", 1, int))
        self._consumer: Consumer | None = None
        self._trackers: dict[int, OrderedTracker] = {}
        self._committed: dict[int, int] = {}

    def open(self) -> None:
        log = self.ctx.log
        log.create_topic(TopicSpec(self.topic, partitions=self.partitions), exist_ok=True)
        self._consumer = log.consumer(
            self.group, [self.topic], auto_offset_reset="latest" if self.reset == "latest" else "earliest",
            client_id=f"route-{self.ctx.route_id}",
        )  # fmt: skip

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        assert self._consumer is not None
        records = self._consumer.poll(timeout=timeout, max_records=max_messages)
        source = f"kawa:topic:{self.topic}"
        out = []
        for record in records:
            self._trackers.setdefault(record.partition, OrderedTracker()).add(record.offset)
            out.append(record_message(record, source))
        return out

    def ack(self, tokens: Iterable[Token]) -> None:
        for token in tokens:
            partition, offset = cast("tuple[int, int]", token)
            tracker = self._trackers.get(partition)
            if tracker is not None:
                tracker.done(offset)

    def commit(self) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for partition, tracker in self._trackers.items():
            position, inclusive = tracker.commit_point()
            if position is None:
                continue
            offset = position + 1 if inclusive else position
            if self._committed.get(partition) != offset:
                offsets[TopicPartition(self.topic, partition)] = offset
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except CommitFailed:
            # The partitions moved to another member; it resumes from the last commit (at-least-once).
            assigned = {tp.partition for tp in self._consumer.assignment()}
            for partition in list(self._trackers):
                if partition not in assigned:
                    del self._trackers[partition]
                    self._committed.pop(partition, None)
            return
        for tp, offset in offsets.items():
            self._committed[tp.partition] = offset
        for tracker in self._trackers.values():
            if not tracker.pending:
                tracker.__init__()  # type: ignore[misc]  # forget finished offsets

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def event_headers(message: Message, event_type: str, source: str, content_type: str) -> list[tuple[str, bytes]]:
    """Kafka binary-mode CloudEvent headers for ``message``."""
    time = message.time or datetime.now(UTC)
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", message.id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", event_type.encode()),
        ("ce_time", time.isoformat().replace("+00:00", "Z").encode()),
        ("content-type", content_type.encode()),
    ]
    subject = message.headers.get("ce-subject") or message.headers.get("key")
    if subject:
        headers.append(("ce_subject", str(subject).encode()))
    for name, value in message.headers.items():
        ext = _EXT.sub("", name.lower().removeprefix("ce-"))[:20]
        if not ext or ext in _RESERVED or ext == "contenttype" or isinstance(value, bytes | dict | list):
            continue
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        headers.append((f"ce_{ext}", text.encode()))
    return headers


class TopicSink:
    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.topic = topic_name(endpoint)
        self.type = option(endpoint, "type")
        self.partitions = int(option(endpoint, "partitions", 1, int))
        self.source = f"/kawa/routes/{ctx.route_id}"
        self._producer: Producer | None = None

    def open(self) -> None:
        log = self.ctx.log
        log.create_topic(TopicSpec(self.topic, partitions=self.partitions), exist_ok=True)
        self._producer = log.producer()

    def write(self, messages: Sequence[Message]) -> None:
        assert self._producer is not None
        default_type = f"kawa.route.{self.ctx.route_id}"
        for message in messages:
            value, content_type = to_bytes(message.body, message.headers.get("content-type"))
            event_type = self.type or message.headers.get("ce-type") or default_type
            headers = event_headers(message, str(event_type), self.source, content_type)
            headers += plain_headers(headers)  # a dead letter's reason also as plain kawa-dlq-* headers
            key = message.key.encode() if message.key is not None else None
            self._producer.produce(self.topic, value, key=key, headers=headers)
        self._producer.flush()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
